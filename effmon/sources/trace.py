"""Trace files: recorded NVML readings and step/request events, one JSON object a line.

A ``meta`` line first, then ``gpu``, ``train_step`` and ``generate_batch`` lines. ``load_trace``
checks every line (numbers finite, times in order, no hour-long jump) and names the first bad one
with how to fix it, before anything is recorded; a replay then streams the GPU readings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

GPU_FIELDS_REQUIRED = ("t", "gpu", "mem_used_bytes", "power_w")
GPU_FIELDS_NUMERIC = (
    "mem_total_bytes", "util_gpu_pct", "util_mem_pct", "energy_j", "sm_clock_mhz", "mem_clock_mhz", "temp_c",
    "sm_active_pct", "sm_occupancy_pct", "tensor_active_pct", "dram_bw_pct", "power_limit_w", "clock_event_reasons",
)  # fmt: skip
STEP_FIELDS_NUMERIC = ("step", "tokens", "samples", "loss", "lr", "grad_norm", "epoch")
BATCH_FIELDS_NUMERIC = ("requests", "prompt_tokens_each", "new_tokens_each")
KINDS = ("meta", "gpu", "train_step", "generate_batch")
TOLERANCE_S = 1.0
"""GPU readings come in time order, give or take this much (several GPUs read in turn)."""
MAX_GAP_S = 3600.0
"""Longer than this without a reading (or an event this far outside the readings) is not one recording."""


class TraceError(Exception):
    pass


@dataclass
class Trace:
    """A checked trace: its metadata, events and summary in memory; its GPU readings streamed from the file
    (``gpu_rows()``), so a replay of hours of readings holds a few seconds of them at a time."""

    path: str
    meta: dict[str, Any]
    t0: float
    t_gpu_end: float
    steps: list[dict[str, Any]]
    batches: list[dict[str, Any]]
    gpu_indices: list[int]
    gpu_count: int = 0
    has_gpm: bool = False
    has_energy: bool = False
    phases: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def t1(self) -> float:
        ends = [self.t_gpu_end] + [s["t_end"] for s in self.steps] + [b["t_end"] for b in self.batches]
        return max(ends)

    def gpu_rows(self) -> Iterator[dict[str, Any]]:
        """The GPU readings in file order (checked by ``load_trace``: in time order within ``TOLERANCE_S``)."""
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if '"gpu"' not in line:
                    continue
                obj = json.loads(line)
                if obj.get("kind") == "gpu":
                    yield obj


def bundled_trace_path() -> Path:
    """The real H100 session shipped inside the package (used by ``effmon demo``)."""
    return Path(str(resources.files("effmon") / "data" / "h100_phases.jsonl"))


def _number(obj: dict[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TraceError(f"{where}: field {key!r} must be a finite number, got {value!r}")
    return float(value)


def _optional_numbers(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if obj.get(key) is not None:
            _number(obj, key, where)


def _parse(line: str, path: Path, lineno: int, last: bool) -> dict[str, Any]:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        if last:
            raise TraceError(
                f"{where}: the last line is cut off ({exc.msg}); the trace looks truncated. "
                f"Keep the complete lines with: head -n {lineno - 1} {path} > fixed.jsonl"
            ) from None
        raise TraceError(f"{where}: not valid JSON ({exc.msg}); fix or remove that line") from None
    if not isinstance(obj, dict):
        raise TraceError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if obj.get("kind") not in KINDS:
        raise TraceError(f"{where}: unknown kind {obj.get('kind')!r}; expected one of {', '.join(KINDS)}")
    return obj


def _check_gpu(obj: dict[str, Any], where: str) -> None:
    for key in GPU_FIELDS_REQUIRED:
        _number(obj, key, where)
    _optional_numbers(obj, GPU_FIELDS_NUMERIC, where)


def _check_step(obj: dict[str, Any], where: str) -> None:
    if "t_start" in obj and "t_end" in obj:
        obj["t_start"] = _number(obj, "t_start", where)
        obj["t_end"] = _number(obj, "t_end", where)
        if obj["t_end"] < obj["t_start"]:
            raise TraceError(f"{where}: t_end {obj['t_end']} is before t_start {obj['t_start']}")
    elif _number(obj, "secs", where) < 0:
        raise TraceError(f"{where}: secs must not be negative, got {obj['secs']}")
    _optional_numbers(obj, STEP_FIELDS_NUMERIC, where)


def _check_batch(obj: dict[str, Any], where: str) -> None:
    if _number(obj, "t_end", where) < _number(obj, "t_start", where):
        raise TraceError(f"{where}: t_end {obj['t_end']} is before t_start {obj['t_start']}")
    _optional_numbers(obj, BATCH_FIELDS_NUMERIC, where)


CHECKS = {"gpu": _check_gpu, "train_step": _check_step, "generate_batch": _check_batch}


class _Scan:
    """What one pass over the lines learns: events, the readings' extent, phases; the readings are not kept."""

    def __init__(self, path: Path):
        self.path = path
        self.meta: dict[str, Any] | None = None
        self.steps: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        self.t0: float | None = None
        self.last_t: float | None = None
        self.latest_t: float | None = None
        self.indices: set[int] = set()
        self.count = 0
        self.has_gpm = self.has_energy = False
        self.spans: dict[str, list[float]] = {}

    def line(self, obj: dict[str, Any], where: str) -> None:
        if obj["kind"] == "meta":
            if self.meta is not None:
                raise TraceError(f"{where}: a second meta line; a trace has one, first")
            self.meta = obj
            return
        if self.meta is None:
            raise TraceError(f'{where}: the first line must be the {{"kind": "meta"}} line')
        CHECKS[obj["kind"]](obj, where)
        if obj["kind"] == "gpu":
            self.gpu(obj, where)
        else:
            (self.steps if obj["kind"] == "train_step" else self.batches).append(obj)

    def gpu(self, obj: dict[str, Any], where: str) -> None:
        t = obj["t"]
        if self.latest_t is not None and t < self.latest_t - TOLERANCE_S:
            raise TraceError(
                f"{where}: time goes back from {self.latest_t} to {t}; a trace's GPU readings come in time order "
                "(sort it: effmon replays it as it was recorded)"
            )
        if self.latest_t is not None and t > self.latest_t + MAX_GAP_S:
            raise TraceError(
                f"{where}: time jumps from {self.latest_t} to {t}, more than {MAX_GAP_S:.0f} s without a reading; "
                "a trace is one continuous recording (split it, or fix its time stamps)"
            )
        self.t0 = t if self.t0 is None else min(self.t0, t)
        self.latest_t = t if self.latest_t is None else max(self.latest_t, t)
        self.indices.add(int(obj["gpu"]))
        self.count += 1
        self.has_gpm = self.has_gpm or obj.get("sm_active_pct") is not None
        self.has_energy = self.has_energy or obj.get("energy_j") is not None
        if obj.get("phase"):
            self.extend_phase(str(obj["phase"]), t, t)

    def extend_phase(self, name: str, a: float, b: float) -> None:
        """A phase label's extent: the first to the last time stamp of anything labelled with it."""
        ext = self.spans.setdefault(name, [a, b])
        ext[0], ext[1] = min(ext[0], a), max(ext[1], b)


def load_trace(path: str | Path) -> Trace:
    """Check a whole trace, line by line (the first bad line is named with how to fix it), keeping its events
    and summary; its GPU readings are read again, streamed, when it is replayed."""
    path = Path(path)
    scan = _Scan(path)
    lineno, text_end = 0, "\n"
    try:
        with open(path, encoding="utf-8") as f:
            pending: str | None = None
            for lineno, line in enumerate(f, 1):  # noqa: B007 - lineno is used after the loop
                if pending is not None:
                    scan.line(_parse(pending, path, lineno - 1, last=False), f"{path}:{lineno - 1}")
                pending = line if line.strip() else None
                text_end = line[-1:]
            if pending is not None:
                scan.line(_parse(pending, path, lineno, last=text_end != "\n"), f"{path}:{lineno}")
    except FileNotFoundError:
        raise TraceError(f"trace file not found: {path}; pass the path of a .jsonl trace") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from None
    if lineno == 0:
        raise TraceError(f'{path} is empty; a trace starts with a {{"kind": "meta"}} line')
    if scan.meta is None:
        raise TraceError(f"{path}: no meta line")
    if scan.t0 is None or scan.latest_t is None:
        raise TraceError(f"{path}: no gpu readings; a trace needs lines of kind 'gpu'")
    _place_steps_without_times(scan.steps, scan.t0)
    for ev in scan.steps + scan.batches:
        if not (scan.t0 - MAX_GAP_S <= ev["t_start"] and ev["t_end"] <= scan.latest_t + MAX_GAP_S):
            raise TraceError(
                f"{path}: an event at {ev['t_start']}..{ev['t_end']} lies far outside the GPU readings "
                f"({scan.t0}..{scan.latest_t}); fix its time stamps"
            )
        if ev.get("phase"):
            scan.extend_phase(str(ev["phase"]), ev["t_start"], ev["t_end"])
    return Trace(
        str(path),
        scan.meta,
        scan.t0,
        scan.latest_t,
        scan.steps,
        scan.batches,
        sorted(scan.indices),
        scan.count,
        scan.has_gpm,
        scan.has_energy,
        sorted(((name, a, b) for name, (a, b) in scan.spans.items()), key=lambda p: p[1]),
    )


def _place_steps_without_times(steps: list[dict[str, Any]], t0: float) -> None:
    """Steps given only as durations (``secs``) are laid end to end from the trace start."""
    cursor = t0
    for step in steps:
        if "t_start" not in step:
            step["t_start"] = cursor
            step["t_end"] = cursor + float(step["secs"])
        cursor = step["t_end"]
