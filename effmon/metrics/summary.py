"""``evaluate``: a session window in, a typed ``Summary`` out. Every presenter reads the summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from effmon import __version__
from effmon.core.meta import SessionMeta
from effmon.core.store import SessionReader
from effmon.metrics.aggregate import Aggregation, ExactAggregation
from effmon.metrics.registry import METRICS, Inputs, MetricDef, Options, Result, compute_all, table_order
from effmon.metrics.stats import (
    GpuStats,
    InferenceStats,
    Requests,
    ServerStats,
    Steps,
    TrainingStats,
    all_gpu_stats,
    inference_stats,
    server_stats,
    split_requests,
    training_stats,
)
from effmon.metrics.timeseries import TimeSeries, machine_series
from effmon.metrics.window import MetricsError, Window, resolve_window

SESSION_FIELDS = ("name", "mode", "status", "command", "started_at", "ended_at", "exit_code", "precision")


@dataclass
class Summary:
    """Everything effmon knows about a session window: typed stats and every metric's result."""

    effmon_version: str
    session: dict[str, Any]
    run_kind: str
    window: Window
    model: dict[str, Any] | None
    gpus: list[GpuStats]
    training: TrainingStats | None
    inference: InferenceStats | None
    server: ServerStats | None
    results: dict[str, Result]
    notes: list[str]
    steps: Steps
    requests: Requests
    series: TimeSeries | None

    def result(self, key: str) -> Result:
        return self.results[key]

    def value(self, key: str) -> Any:
        return self.results[key].value

    def metrics(self, where: str) -> list[tuple[MetricDef, Result]]:
        """The metrics a view shows, in order: ``table`` (every known one and the always-shown ones),
        ``strip`` (the dashboard), ``compare``."""
        out = []
        for m in table_order() if where == "table" else METRICS.values():
            r = self.results[m.key]
            if where == "table" and (m.table == "always" or (m.table == "known" and r.value is not None)):
                out.append((m, r))
            elif where == "strip" and m.strip is not None and (r.value is not None or m.table == "always"):
                out.append((m, r))
            elif where == "compare" and m.compare:
                out.append((m, r))
        return out


def _run_kind(
    meta: SessionMeta, training: TrainingStats | None, inference: InferenceStats | None, server: ServerStats | None
) -> str:
    if meta.run_kind:
        return meta.run_kind
    if server and not training:
        return "inference"
    if training and (not inference or training.step_time_sum_s >= inference.busy_time_s):
        return "training"
    return "inference" if inference else "monitoring"


def _session(meta: SessionMeta) -> dict[str, Any]:
    return {k: getattr(meta, k) for k in SESSION_FIELDS} | {
        "host": (meta.host or {}).get("hostname"),
        "driver": next((g.get("driver") for g in meta.gpus or []), None),
    }


def _without_gpu(reader: SessionReader, meta: SessionMeta, w: Window, has_work: bool) -> str:
    """The note for a window without GPU readings; an error when there is nothing else to summarise."""
    if reader.count("gpu"):
        no_gpu = f"no GPU readings fall inside {w.label}"
    elif not meta.gpus:
        no_gpu = f"session {meta.name} has no GPU readings: it was recorded on a machine without an NVIDIA GPU"
    else:
        no_gpu = f"session {meta.name} has no GPU readings"
    if not has_work:
        later = (
            "the step and request figures come with the first step or request"
            if meta.status in (None, "recording")
            else "it holds no steps or requests either: there is nothing to summarise"
        )
        raise MetricsError(f"{no_gpu}; AMU, PCU and AEC need GPU readings, and {later}")
    return f"{no_gpu}: AMU, PCU, AEC and energy are null; step and request figures are computed"


def coverage_notes(meta: SessionMeta, w: Window, gpus: list[GpuStats]) -> list[str]:
    """The time each GPU's figures cover, when it is not the whole window: a GPU lost, a source that stopped
    answering, readings that stop early."""
    notes = []
    lost = sum((meta.damaged or {}).get("rows_lost", {}).values())
    if lost:
        notes.append(
            f"this session file is damaged: {lost} row(s) could not be read and are missing from every figure "
            "(effmon sessions check NAME says where)"
        )
    for index, t in sorted((meta.lost_gpus or {}).items()):
        if t <= w.end:
            notes.append(
                f"GPU {index} was lost at t+{t - w.session_start:.1f} s: its memory, utilisation, power and energy "
                "figures cover the window up to then"
            )
    for channel, rel in sorted((meta.hung or {}).items()):
        at = f" at t+{rel:.1f} s" if rel is not None and rel >= 0 else ""
        notes.append(f"{channel} stopped answering{at}: its readings, and the figures made from them, end there")
    for g in gpus:
        if w.duration > 0 and g.energy_covered_s < 0.9 * w.duration:
            notes.append(
                f"GPU {g.index}: power readings cover {g.energy_covered_s:.1f} s of the {w.duration:.1f} s window; "
                "AEC and energy are over that part"
            )
    return notes


def _logged_only(reader: SessionReader, meta: SessionMeta) -> str:
    """A job effmon attached to late, with only its own logged steps (a Trainer's trainer_state.json or TensorBoard
    events)."""
    logged = sorted(reader.rows("train_log"), key=lambda r: r["step"])
    if not logged:
        return "no training steps were recorded"
    first, last = logged[0], logged[-1]
    source = meta.tensorboard or meta.trainer_state or "the job logs"
    return (
        f"training (from {source}): {len(logged)} logged steps, step "
        f"{first['step']}-{last['step']}, loss {first['loss']:.4g} -> {last['loss']:.4g}; no step times there, so AL, "
        "TT and ST need the job started with effmon run or reporting through effmon.track"
    )


BETWEEN_STEPS = ("eval", "save", "log")
"""Phases the transformers integration times between optimizer steps (kept out of the steps' figures)."""


def _between_steps(agg: Aggregation, w: Window) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """The evaluation, saving and logging phases of the window: seconds by name, and their intervals."""
    out: dict[str, float] = {}
    spans = []
    for p in agg.spans("phase", w):
        if p.get("name") in BETWEEN_STEPS and p.get("t_start") is not None and p.get("t_end") is not None:
            out[p["name"]] = out.get(p["name"], 0.0) + (p["t_end"] - p["t_start"])
            spans.append((float(p["t_start"]), float(p["t_end"])))
    return out, spans


def evaluate(
    reader: SessionReader,
    window: Window | None = None,
    *,
    options: Options | None = None,
    aggregation: Aggregation | None = None,
    with_series: bool = True,
) -> Summary:
    """The summary of a window (default: the whole session). ``aggregation``: how series are reduced
    (exact by default; the dashboard passes its incremental one, which has no time series)."""
    options = options or Options()
    meta = reader.session_meta()
    w = window or resolve_window(reader)
    agg = aggregation or ExactAggregation(reader)
    notes: list[str] = []
    gpus = all_gpu_stats(agg, w, meta.gpus or [])
    if gpus and any(g.throttle_s is None for g in gpus):
        notes.append("throttle time: clock-event reasons were not recorded (replayed trace or unsupported GPU)")
    steps = Steps(sorted(agg.spans("train_step", w), key=lambda r: (r["t_start"], r.get("rank") or 0)))
    requests = split_requests(agg.spans("request", w))
    phases, between = _between_steps(agg, w)
    training = training_stats(steps, notes, options.tokens, phases, between) if steps.rows else None
    if not steps.rows and reader.count("train_log"):
        notes.append(_logged_only(reader, meta))
    inference = inference_stats(requests)
    server = server_stats(agg, w) if reader.has("serving") else None
    if not gpus:
        notes.append(_without_gpu(reader, meta, w, bool(steps.rows or requests.rows or reader.count("train_log"))))
    notes += coverage_notes(meta, w, gpus)
    model = _model(meta, options)
    run_kind = _run_kind(meta, training, inference, server)
    inputs = Inputs(gpus, training, inference, server, run_kind, model, options, meta.to_dict(), notes)
    results = compute_all(inputs)
    return Summary(
        effmon_version=__version__,
        session=_session(meta),
        run_kind=run_kind,
        window=w,
        model=model or None,
        gpus=gpus,
        training=training,
        inference=inference,
        server=server,
        results=results,
        notes=notes,
        steps=steps,
        requests=requests,
        series=_series(agg, w, gpus) if with_series else None,
    )


def _model(meta: SessionMeta, options: Options) -> dict[str, Any]:
    model = dict(meta.model or {})
    if options.params:
        model["params"], model["source"] = options.params, "--params"
    return model


def _series(agg: Aggregation, w: Window, gpus: list[GpuStats]) -> TimeSeries:
    if not isinstance(agg, ExactAggregation):
        raise ValueError("the time series needs the exact aggregation")
    return machine_series(agg, w, gpus)


def evaluate_spans(
    steps: list[dict[str, Any]],
    requests: list[dict[str, Any]],
    keys: tuple[str, ...],
    *,
    options: Options | None = None,
) -> dict[str, Result]:
    """The registry's figures of some training steps and requests alone (a live panel's last seconds, a load run's
    results): the same declarations as a report, with no GPU or server input (their figures are N/A here)."""
    options = options or Options()
    notes: list[str] = []
    ordered = Steps(sorted(steps, key=lambda r: (r["t_start"], r.get("rank") or 0)))
    training = training_stats(ordered, notes, options.tokens) if ordered.rows else None
    inference = inference_stats(split_requests(requests))
    run_kind = _run_kind(SessionMeta(), training, inference, None)
    x = Inputs([], training, inference, None, run_kind, {}, options, {}, notes)
    return {key: x.result(key) for key in keys}
