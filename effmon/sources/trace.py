"""Trace files: recorded NVML readings and step/request events, one JSON object a line.

The format is the one in ``../shared/traces/README.md``: a ``meta`` line first, then
``gpu``, ``train_step`` and ``generate_batch`` lines. ``load_trace`` checks every line
and names the first bad one with how to fix it, before anything is recorded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

GPU_FIELDS_REQUIRED = ("t", "gpu", "mem_used_bytes", "power_w")
KINDS = ("meta", "gpu", "train_step", "generate_batch")


class TraceError(Exception):
    pass


@dataclass
class Trace:
    path: str
    meta: dict[str, Any]
    gpu: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    batches: list[dict[str, Any]]
    phases: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def t0(self) -> float:
        return self.gpu[0]["t"]

    @property
    def t1(self) -> float:
        ends = [self.gpu[-1]["t"]] + [s["t_end"] for s in self.steps] + [b["t_end"] for b in self.batches]
        return max(ends)

    @property
    def gpu_indices(self) -> list[int]:
        return sorted({int(r["gpu"]) for r in self.gpu})


def bundled_trace_path() -> Path:
    """The real H100 session shipped inside the package (used by ``effmon demo``)."""
    return Path(str(resources.files("effmon") / "data" / "h100_phases.jsonl"))


def _number(obj: dict[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TraceError(f"{where}: field {key!r} must be a finite number, got {value!r}")
    return float(value)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"trace file not found: {path}; pass the path of a .jsonl trace") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from None


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


def _check_step(obj: dict[str, Any], where: str) -> None:
    if "t_start" in obj and "t_end" in obj:
        obj["t_start"] = _number(obj, "t_start", where)
        obj["t_end"] = _number(obj, "t_end", where)
    else:
        _number(obj, "secs", where)


def _check_batch(obj: dict[str, Any], where: str) -> None:
    _number(obj, "t_start", where)
    _number(obj, "t_end", where)


CHECKS = {"gpu": _check_gpu, "train_step": _check_step, "generate_batch": _check_batch}


def load_trace(path: str | Path) -> Trace:
    """Read and check a whole trace; the first bad line is named with how to fix it."""
    path = Path(path)
    text = _read(path)
    lines = text.splitlines()
    if not lines:
        raise TraceError(f'{path} is empty; a trace starts with a {{"kind": "meta"}} line')
    meta: dict[str, Any] | None = None
    by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in CHECKS}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        obj = _parse(line, path, lineno, last=lineno == len(lines) and not text.endswith("\n"))
        if obj["kind"] == "meta":
            if meta is not None:
                raise TraceError(f"{where}: a second meta line; a trace has one, first")
            meta = obj
            continue
        if meta is None:
            raise TraceError(f'{where}: the first line must be the {{"kind": "meta"}} line')
        CHECKS[obj["kind"]](obj, where)
        by_kind[obj["kind"]].append(obj)
    if meta is None:
        raise TraceError(f"{path}: no meta line")
    gpu, steps = by_kind["gpu"], by_kind["train_step"]
    if not gpu:
        raise TraceError(f"{path}: no gpu readings; a trace needs lines of kind 'gpu'")
    gpu.sort(key=lambda r: (r["t"], r["gpu"]))
    _place_steps_without_times(steps, gpu[0]["t"])
    trace = Trace(str(path), meta, gpu, steps, by_kind["generate_batch"])
    trace.phases = _phases(trace)
    return trace


def _place_steps_without_times(steps: list[dict[str, Any]], t0: float) -> None:
    """Steps given only as durations (``secs``) are laid end to end from the trace start."""
    cursor = t0
    for step in steps:
        if "t_start" not in step:
            step["t_start"] = cursor
            step["t_end"] = cursor + float(step["secs"])
        cursor = step["t_end"]


def _phases(trace: Trace) -> list[tuple[str, float, float]]:
    """Each phase label's extent: the first to the last time stamp of anything labelled with it."""
    spans: dict[str, list[float]] = {}
    for row in trace.gpu:
        if row.get("phase"):
            ext = spans.setdefault(row["phase"], [row["t"], row["t"]])
            ext[0], ext[1] = min(ext[0], row["t"]), max(ext[1], row["t"])
    for ev in trace.steps + trace.batches:
        if ev.get("phase"):
            ext = spans.setdefault(ev["phase"], [ev["t_start"], ev["t_end"]])
            ext[0], ext[1] = min(ext[0], ev["t_start"]), max(ext[1], ev["t_end"])
    return sorted(((name, a, b) for name, (a, b) in spans.items()), key=lambda p: p[1])
