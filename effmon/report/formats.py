"""A ``Summary`` as export formats: effmon JSON, the EfficientLLM record (and its pretraining shape), CSV.

Metric values and their places in the documents come from the metric declarations (``json``,
``efficientllm``, ``unit_doc``): a metric declared once appears in every export without a change here.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import TYPE_CHECKING, Any

from effmon.core.declare import GPM_ACTIVITY, GPU_COLUMNS
from effmon.core.store import SessionReader
from effmon.metrics import METRICS, Summary
from effmon.metrics.registry import json_groups

if TYPE_CHECKING:
    import numpy as np

SERIES_UNITS = {
    "total_time": "s",
    "time_series.memory_utilization": "GiB",
    "time_series.compute_utilization": "ratio 0-1",
    "time_series.power_consumption": "W",
    "request_level.latencies": "s",
    "request_level.computation_times": "s",
    "request_level.communication_times": "s",
}


def units() -> dict[str, str]:
    """What every number of the EfficientLLM record is measured in."""
    declared = {m.efficientllm: m.unit_doc for m in METRICS.values() if m.efficientllm and m.unit_doc}
    return {**declared, **SERIES_UNITS}


def clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null, private keys are dropped."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        if (
            obj
            and isinstance(obj[0], (int, float))
            and not any(isinstance(v, float) and not math.isfinite(v) for v in obj if v is not None)
        ):
            return list(obj)  # a series of numbers: nothing inside to clean
        return [clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def metric_tree(s: Summary, groups: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Metric values placed where each declaration says, group by group (default: every group the declarations
    make, in the order they are declared)."""
    tree: dict[str, Any] = {g: None for g in (json_groups() if groups is None else groups)}
    for key, m in METRICS.items():
        if m.json is None or m.json[0] not in tree:
            continue
        r = s.result(key)
        if m.json_object:
            tree[m.json[0]] = {m.json[-1]: r.value, **({"reason": r.reason} if r.reason else {}), **r.info}
        elif len(m.json) == 1:
            tree[m.json[0]] = r.value
        else:
            node = tree[m.json[0]] if isinstance(tree[m.json[0]], dict) else {}
            node[m.json[1]] = r.value
            tree[m.json[0]] = node
    if isinstance(tree.get("diagnosis"), dict):  # the figures' reading: the one line and the rules that fired
        from effmon.metrics.diagnosis import diagnose

        tree["diagnosis"].update(diagnose(s).to_json())
    return {g: v for g, v in tree.items() if v is not None or any(m.json == (g,) for m in METRICS.values())}


def window_dict(s: Summary) -> dict[str, Any]:
    w = s.window
    return {"label": w.label, "start": w.start, "end": w.end, "duration_s": w.duration, "relative_s": w.relative()}


def _asdict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if obj is not None else None


def effmon_json(s: Summary) -> dict[str, Any]:
    """Everything effmon knows about the window."""
    return clean(
        {
            "effmon_version": s.effmon_version,
            "session": s.session,
            "run_kind": s.run_kind,
            "window": window_dict(s),
            "model": s.model,
            **metric_tree(s),
            "training": _asdict(s.training),
            "inference": _asdict(s.inference),
            "server": _asdict(s.server),
            "gpus": [dataclasses.asdict(g) for g in s.gpus],
            "notes": s.notes,
        }
    )


def _request_level(s: Summary) -> tuple[dict[str, list[Any]], int]:
    kind = s.run_kind
    if kind == "inference" or (kind != "training" and s.inference):
        latencies = s.requests.latencies
        return {
            "latencies": latencies,
            "tokens": s.requests.generated_tokens,
            "samples": [1] * len(latencies),
            "generated_tokens": s.requests.generated_tokens,
            "computation_times": list(latencies),
            "communication_times": [],
        }, len(latencies)
    groups = s.steps.groups  # one entry per optimizer step, however many ranks took it
    latencies = [g.latency for g in groups]
    communication = s.steps.comm()
    padded = bool(s.training and s.training.tokens_counted == "padded")
    return {
        "latencies": latencies,
        "tokens": [(g.total("padded_tokens") if padded else g.total("tokens")) or 0 for g in groups],
        "samples": [g.total("samples") or 0 for g in groups],
        "generated_tokens": s.requests.generated_tokens if s.inference else [],
        "computation_times": [lat - c for lat, c in zip(latencies, communication, strict=True)]
        if communication is not None
        else list(latencies),
        "communication_times": communication if communication is not None else [],
    }, len(groups)


def _benchmark_keys(s: Summary, primary: str | None) -> dict[str, Any]:
    """The benchmark's own keys (AMU, PCU, AL, AEC, MCR ...); of TT, ST and IT the run's primary one, and any other
    that has a value."""
    out: dict[str, Any] = {}
    for m in METRICS.values():
        if not m.efficientllm:
            continue
        if m.efficientllm not in ("TT", "ST", "IT") or s.value(m.key) is not None or m.efficientllm == primary:
            out[m.efficientllm] = s.value(m.key)
    return out


def _time_series(s: Summary) -> dict[str, Any]:
    ts = s.series
    return {
        "timestamps": ts.timestamps if ts else [],
        "memory_utilization": ts.memory_utilization if ts else [],
        "compute_utilization": ts.compute_utilization if ts else [],
        "power_consumption": ts.power_consumption if ts else [],
    }


def _tokens_counted(training: Any) -> str | None:
    if not training:
        return None
    if training.tokens_counted == "padded":
        return "padded input positions (--tokens padded)"
    return "real tokens, padding not counted"


def _effmon_block(s: Summary, primary: str | None, num_requests: int) -> dict[str, Any]:
    """What the benchmark's record lacks: units, the window, every registry figure in its group, the stats."""
    training, inference, kind = s.training, s.inference, s.run_kind
    top_level = {m.json[0] for m in METRICS.values() if m.json is not None and m.json == (m.efficientllm,)}
    tree = metric_tree(s, tuple(g for g in json_groups() if g not in top_level))  # TT, ST, IT stand at the top
    counts = "requests" if num_requests and inference and kind != "training" else "optimizer steps"
    no_params = s.value("TT") is None and training
    return {
        "version": s.effmon_version,
        "units": units(),
        "run_kind": kind,
        "primary_throughput": primary,
        "session": s.session,
        "window": window_dict(s),
        "model": s.model,
        "num_requests_counts": counts,
        "tokens_counted": _tokens_counted(training),
        **tree,
        "per_param_null_reason": "model parameter count unknown; give --params" if no_params else None,
        "training": _asdict(training),
        "inference": _asdict(inference),
        "gpus": [dataclasses.asdict(g) for g in s.gpus],
        "notes": s.notes,
    }


def efficientllm(s: Summary) -> dict[str, Any]:
    """The reference inference monitor's object, plus an ``effmon`` object with what it lacks."""
    request_level, num_requests = _request_level(s)
    primary = {"training": "ST", "inference": "IT"}.get(s.run_kind)
    out = _benchmark_keys(s, primary)
    out.update(
        {
            "total_time": s.window.duration,
            "num_requests": num_requests,
            "time_series": _time_series(s),
            "request_level": request_level,
        }
    )
    out["effmon"] = _effmon_block(s, primary, num_requests)
    return clean(out)


def efficientllm_pretrain(s: Summary) -> dict[str, Any]:
    """The pretraining scripts' ``efficientllm_metrics.json`` shape."""
    model = s.model or {}
    return clean(
        {
            "model_type": model.get("type"),
            "model_size": model.get("size"),
            "parameters": model.get("params"),
            "context_length": model.get("context_length"),
            "metrics": {
                "ppl": None,
                "amu_gb": s.value("AMU"),
                "al_seconds": s.value("AL"),
                "tt_tokens_per_param_per_sec": s.value("TT"),
                "aec_watts": s.value("AEC"),
            },
            "effmon": {
                "version": s.effmon_version,
                "window": window_dict(s),
                "train_loss_last": s.training.loss_last if s.training else None,
                "ppl_null_reason": "perplexity needs a validation set; effmon does not evaluate",
                "st_samples_per_param_per_sec": s.value("ST"),
                "pcu_ratio": s.value("PCU"),
                "energy_j": s.value("energy_j"),
                "units": units(),
            },
        }
    )


CSV_COLUMNS = ["t", "t_rel_s", "gpu", *GPU_COLUMNS, *GPM_ACTIVITY]


def _texts(values: np.ndarray, integer: bool) -> np.ndarray:
    """Each value as the csv module writes it (repr of a float, an int as int, NULL empty), formatting
    each distinct value once: most columns hold few."""
    import numpy as np

    distinct, where = np.unique(values, return_inverse=True)
    texts = ["" if v != v else (str(int(v)) if integer and v.is_integer() else repr(v)) for v in distinct.tolist()]
    return np.array(texts, dtype=object)[where.reshape(-1)]


def _gpu_columns(columns: dict[str, list[Any]], idx: int, s: Any, g: Any, start: float, end: float) -> None:
    """One GPU's samples in [start, end] appended to ``columns``; its GPM columns hold the latest GPM reading."""
    import numpy as np

    inside = (s.t >= start) & (s.t <= end)
    t = s.t[inside]
    columns["t"].append(t)
    columns["gpu"].append(np.full(len(t), float(idx)))
    for c in GPU_COLUMNS:
        columns[c].append(s[c][inside] if c in s else np.full(len(t), np.nan))
    at = np.searchsorted(g.t, t, "right") - 1 if g is not None else np.full(len(t), -1)
    for c in GPM_ACTIVITY:
        held = np.full(len(t), np.nan)
        if g is not None and c in g:
            held[at >= 0] = g[c][at[at >= 0]]
        columns[c].append(held)


def csv_text(reader: SessionReader, window_start: float, window_end: float, session_start: float) -> str:
    """One row per GPU sample in the window, in (time, GPU) order; the GPM columns hold the latest GPM
    reading at that time."""
    import numpy as np

    gpu = reader.series("gpu", GPU_COLUMNS).by_key
    gpm = reader.series("gpu_gpm", GPM_ACTIVITY).by_key
    columns: dict[str, list[np.ndarray]] = {c: [] for c in CSV_COLUMNS}
    for idx, s in sorted(gpu.items()):
        _gpu_columns(columns, idx, s, gpm.get(idx), window_start, window_end)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(CSV_COLUMNS)
    if not columns["t"] or not sum(len(a) for a in columns["t"]):
        return buf.getvalue()
    arrays = {c: np.concatenate(v) for c, v in columns.items() if c != "t_rel_s"}
    order = np.lexsort((arrays["gpu"], arrays["t"]))
    arrays = {c: a[order] for c, a in arrays.items()}
    ent = reader.entities().get("gpu")
    integer = {"gpu", *(m.name for m in ent.metrics if m.sql_type == "INTEGER")} if ent else {"gpu"}
    since, where = np.unique(arrays["t"] - session_start, return_inverse=True)  # the GPUs of a tick share it
    rel = np.array([round(v, 4) for v in since.tolist()])[where.reshape(-1)]
    texts = [_texts(rel if c == "t_rel_s" else arrays[c], c in integer) for c in CSV_COLUMNS]
    buf.write("\n".join(map(",".join, zip(*texts, strict=True))))
    buf.write("\n")
    return buf.getvalue()
