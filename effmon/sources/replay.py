"""Plays a trace file as the NVML readings and step data of a fake machine.

It behaves like the NVML source: GPU gauges (and GPM activity, which the trace holds
per reading) come on the every-tick channel, the energy counter only on the slow one,
and steps, requests and phases when they end. Time stamps are the trace's own, so a
replayed session computes to the same numbers as the machine that was recorded.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from effmon.core.declare import GPM_ACTIVITY, Row
from effmon.core.source import SourceInfo, SourceOptions
from effmon.sources.trace import TOLERANCE_S, Trace, load_trace

_GPM = GPM_ACTIVITY
_GPU = (
    "mem_used_bytes",
    "mem_total_bytes",
    "util_gpu_pct",
    "util_mem_pct",
    "power_w",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "temp_c",
)


class ReplaySource:
    name = "replay"

    def __init__(self, options: SourceOptions, trace: Trace | None = None):
        if trace is None:
            if not options.replay_path:
                raise ValueError("the replay source needs a trace path")
            trace = load_trace(options.replay_path)
        self.trace = trace
        self.channels = {"fast": options.tick_s, "energy": options.slow_s, "events": options.tick_s}
        self._rows = trace.gpu_rows()  # streamed: hours of readings are never all in memory
        self._ahead: list[tuple[float, int, dict[str, Any]]] = []  # read, not yet due (a heap by time)
        self._read_to = -math.inf  # the latest time stamp read from the file
        self._seq = 0
        self._rows_done = False
        self._events = sorted(
            [("train_step", s["t_end"], s) for s in trace.steps]
            + [("request", b["t_end"], b) for b in trace.batches]
            + [("phase", end, {"name": name, "t_start": start, "t_end": end}) for name, start, end in trace.phases],
            key=lambda e: e[1],
        )
        self._event_pos = 0
        self._power_limit = trace.meta.get("power_limit_w")
        self._latest: dict[int, dict[str, Any]] = {}

    @property
    def start_time(self) -> float:
        return self.trace.t0

    @property
    def end_time(self) -> float:
        return self.trace.t1

    def finished(self, now: float) -> bool:
        return now >= self.end_time and self._rows_done and not self._ahead and self._event_pos >= len(self._events)

    def open(self) -> SourceInfo:
        meta = self.trace.meta
        gpus = []
        for idx in self.trace.gpu_indices:
            gpus.append(
                {
                    "index": idx,
                    "name": meta.get("gpu_name", "replayed GPU"),
                    "uuid": None,
                    "mem_total_bytes": meta.get("mem_total_bytes"),
                    "power_limit_w": self._power_limit,
                    "max_sm_clock_mhz": meta.get("max_sm_clock_mhz"),
                    "driver": meta.get("driver"),
                }
            )
        unsupported = {}
        if not self.trace.has_gpm:
            unsupported["gpu_gpm.*"] = "the trace holds no NVML GPM readings"
        if not self.trace.has_energy:
            unsupported["gpu_energy.energy_counter_j"] = "the trace holds no energy counter"
        model = _model_from_meta(meta)
        return SourceInfo(
            gpus=gpus,
            unsupported=unsupported,
            meta={"replay": {"path": self.trace.path, "trace_meta": meta}, **({"model": model} if model else {})},
        )

    def read(self, channel: str, now: float) -> list[Row]:
        if channel == "fast":
            return self._read_fast(now)
        if channel == "energy":
            return self._read_energy(now)
        return self._read_events(now)

    def _due(self, now: float) -> list[dict[str, Any]]:
        """The readings up to ``now``, in time order: the file is read until a reading lies more than the
        trace's tolerance past ``now`` (nothing later in the file can then be due)."""
        while not self._rows_done and self._read_to <= now + TOLERANCE_S:
            rec = next(self._rows, None)
            if rec is None:
                self._rows_done = True
                break
            self._read_to = max(self._read_to, rec["t"])
            self._seq += 1
            heapq.heappush(self._ahead, (rec["t"], self._seq, rec))
        due = []
        while self._ahead and self._ahead[0][0] <= now:
            due.append(heapq.heappop(self._ahead)[2])
        return due

    def _read_fast(self, now: float) -> list[Row]:
        rows: list[Row] = []
        for rec in self._due(now):
            self._latest[rec["gpu"]] = rec
            values: dict[str, Any] = {"t": rec["t"], "gpu": rec["gpu"]}
            for key in _GPU:
                values[key] = rec.get(key)
            values["power_limit_w"] = rec.get("power_limit_w", self._power_limit)
            values["clock_event_reasons"] = rec.get("clock_event_reasons")
            rows.append(Row("gpu", values))
            if any(rec.get(k) is not None for k in _GPM):
                gpm = {"t": rec["t"], "gpu": rec["gpu"], **{k: rec.get(k) for k in _GPM}}
                rows.append(Row("gpu_gpm", gpm))
        return rows

    def _read_energy(self, now: float) -> list[Row]:
        """The counter as the last reading at or before ``now`` saw it, one row per GPU."""
        return [
            Row("gpu_energy", {"t": rec["t"], "gpu": gpu, "energy_counter_j": rec.get("energy_j")})
            for gpu, rec in sorted(self._latest.items())
        ]

    def _read_events(self, now: float) -> list[Row]:
        rows: list[Row] = []
        while self._event_pos < len(self._events) and self._events[self._event_pos][1] <= now:
            kind, _, ev = self._events[self._event_pos]
            self._event_pos += 1
            if kind == "train_step":
                rows.append(
                    Row(
                        "train_step",
                        {
                            "t_start": ev["t_start"],
                            "t_end": ev["t_end"],
                            "rank": 0,
                            "step": ev.get("step"),
                            "tokens": ev.get("tokens"),
                            "samples": ev.get("samples"),
                            "loss": ev.get("loss"),
                            "comm_s": None,
                            "phase": ev.get("phase"),
                        },
                    )
                )
            elif kind == "request":
                rows.append(
                    Row(
                        "request",
                        {
                            "t_start": ev["t_start"],
                            "t_end": ev["t_end"],
                            "requests": ev.get("requests", 1),
                            "prompt_tokens": ev.get("prompt_tokens_each"),
                            "generated_tokens": ev.get("new_tokens_each"),
                            "ttft_s": None,
                            "phase": ev.get("phase"),
                        },
                    )
                )
            else:
                rows.append(Row("phase", dict(ev)))
        return rows

    def close(self) -> None:
        pass


def _model_from_meta(meta: dict[str, Any]) -> dict[str, Any] | None:
    for workload in (meta.get("workloads") or {}).values():
        if isinstance(workload, dict) and workload.get("params"):
            return {"params": int(workload["params"]), "source": "trace meta", "phase": workload.get("phase")}
    return None
