"""Turn a computed summary (``effmon.metrics.compute``) into the export formats."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from effmon.declare import GPM_ACTIVITY, GPU_COLUMNS
from effmon.store import SessionReader

UNITS = {
    "AMU": "GiB (2^30 bytes; the reference code's 'GB'), summed over GPUs",
    "PCU": "ratio 0-1, time-averaged, mean over GPUs",
    "AL": "s per training step, or s per request (end-to-end)",
    "TT": "tokens / parameter / s",
    "ST": "samples / parameter / s",
    "IT": "generated tokens / s",
    "AEC": "W (average power, summed over GPUs)",
    "MCR": "dimensionless",
    "total_time": "s",
    "time_series.memory_utilization": "GiB",
    "time_series.compute_utilization": "ratio 0-1",
    "time_series.power_consumption": "W",
    "request_level.latencies": "s",
    "request_level.computation_times": "s",
    "request_level.communication_times": "s",
}


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null, private keys are dropped."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        if (
            obj
            and isinstance(obj[0], (int, float))
            and not any(isinstance(v, float) and not math.isfinite(v) for v in obj if v is not None)
        ):
            return list(obj)  # a series of numbers: nothing inside to clean
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def efficientllm(summary: dict[str, Any]) -> dict[str, Any]:
    """The reference inference monitor's object, plus an ``effmon`` object with what it lacks."""
    kind = summary["run_kind"]
    steps = summary["_steps"]
    training, inference = summary["training"], summary["inference"]
    series = summary["_series"] or {
        "timestamps": [],
        "memory_utilization": [],
        "compute_utilization": [],
        "power_consumption": [],
    }
    if kind == "inference" or (kind != "training" and inference):
        latencies = summary["_latencies"]
        computation = list(latencies)
        communication: list[float] = []
        tokens: list[int] = list(summary["_gen_tokens"])
        samples = [1] * len(latencies)
        num_requests = len(latencies)
    else:
        latencies = [s["t_end"] - s["t_start"] for s in steps]
        comm = summary["_comm"]
        communication = [float(c) for c in comm]
        computation = [lat - c for lat, c in zip(latencies, communication)] if communication else list(latencies)
        tokens = [s.get("tokens") or 0 for s in steps]
        samples = [s.get("samples") or 0 for s in steps]
        num_requests = len(steps)
    out: dict[str, Any] = {
        "AMU": summary["AMU"]["gib"],
        "PCU": summary["PCU"]["value"],
        "AL": summary["AL"]["value"],
    }
    primary = {
        "training": "ST" if (summary.get("model") or {}).get("peft") or kind == "training" else "TT",
        "inference": "IT",
    }.get(kind)
    for key in ("TT", "ST", "IT"):
        if summary[key] is not None or key == primary:
            out[key] = summary[key]
    out.update(
        {
            "AEC": summary["AEC"]["watts"],
            "MCR": summary["MCR"]["value"],
            "total_time": summary["window"]["duration_s"],
            "num_requests": num_requests,
            "time_series": {
                k: series[k] for k in ("timestamps", "memory_utilization", "compute_utilization", "power_consumption")
            },
            "request_level": {
                "latencies": latencies,
                "tokens": tokens,
                "samples": samples,
                "generated_tokens": list(summary["_gen_tokens"]) if inference else [],
                "computation_times": computation,
                "communication_times": communication,
            },
        }
    )
    out["effmon"] = {
        "version": summary["effmon_version"],
        "units": UNITS,
        "run_kind": kind,
        "primary_throughput": primary,
        "session": summary["session"],
        "window": summary["window"],
        "model": summary["model"],
        "num_requests_counts": "requests" if num_requests and inference and kind != "training" else "training steps",
        "AMU": summary["AMU"],
        "PCU": summary["PCU"],
        "AL": summary["AL"],
        "AEC": summary["AEC"],
        "MCR": summary["MCR"],
        "MFU": summary["MFU"],
        "energy_per": summary["energy_per"],
        "throughput": {
            "tokens_per_s": (training or {}).get("tokens_per_s"),
            "samples_per_s": (training or {}).get("samples_per_s"),
            "generated_tokens_per_s": (inference or {}).get("generated_tokens_per_s"),
            "requests_per_s": (inference or {}).get("requests_per_s"),
        },
        "per_param_null_reason": None
        if (summary["TT"] is not None or not training)
        else "model parameter count unknown; give --params",
        "training": training,
        "inference": inference,
        "gpus": summary["gpus"],
        "throttle_s": summary["throttle_s"],
        "notes": summary["notes"],
    }
    return _clean(out)


def efficientllm_pretrain(summary: dict[str, Any]) -> dict[str, Any]:
    """The pretraining scripts' ``efficientllm_metrics.json`` shape."""
    model = summary.get("model") or {}
    loss = (summary.get("training") or {}).get("loss_last")
    return _clean(
        {
            "model_type": model.get("type"),
            "model_size": model.get("size"),
            "parameters": model.get("params"),
            "context_length": model.get("context_length"),
            "metrics": {
                "ppl": None,
                "amu_gb": summary["AMU"]["gib"],
                "al_seconds": summary["AL"]["value"],
                "tt_tokens_per_param_per_sec": summary["TT"],
                "aec_watts": summary["AEC"]["watts"],
            },
            "effmon": {
                "version": summary["effmon_version"],
                "window": summary["window"],
                "train_loss_last": loss,
                "ppl_null_reason": "perplexity needs a validation set; effmon does not evaluate",
                "st_samples_per_param_per_sec": summary["ST"],
                "pcu_ratio": summary["PCU"]["value"],
                "energy_j": summary["AEC"]["energy_j"],
                "units": UNITS,
            },
        }
    )


def effmon_json(summary: dict[str, Any]) -> dict[str, Any]:
    return _clean(summary)


CSV_COLUMNS = ["t", "t_rel_s", "gpu", *GPU_COLUMNS, *GPM_ACTIVITY]


def csv_text(reader: SessionReader, summary: dict[str, Any]) -> str:
    """One row per GPU sample in the window; GPM columns hold the latest GPM reading at that time."""
    w0, w1 = summary["window"]["start"], summary["window"]["end"]
    s0 = w0 - summary["window"]["relative_s"][0]
    gpm: dict[int, list[tuple[Any, ...]]] = {}
    for row in reader.rows("gpu_gpm", ["gpu", "t", *GPM_ACTIVITY], order="gpu, t"):
        gpm.setdefault(int(row[0]), []).append(row[1:])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    gpu_cols = list(GPU_COLUMNS)
    pos: dict[int, int] = {}
    none4 = (None,) * len(GPM_ACTIVITY)

    def rows() -> Any:
        for row in reader.rows("gpu", ["t", "gpu", *gpu_cols], "t >= ? AND t <= ?", (w0, w1), order="t, gpu"):
            t, g = row[0], row[1]
            series = gpm.get(g, ())
            i = pos.get(g, 0)
            while i < len(series) and series[i][0] <= t:
                i += 1
            pos[g] = i
            yield (t, round(t - s0, 4), *row[1:], *(series[i - 1][1:] if i else none4))

    writer.writerows(rows())
    return buf.getvalue()
