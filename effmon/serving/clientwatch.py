"""The load generator watching itself: is the client, not the server, the bottleneck?

Every timestamp the client takes is taken by its event loop when it gets to the callback. When the loop is busy
(too many streams for one core), chunks wait in the socket buffer and are stamped late: TTFT and ITL grow and
throughput drops, and none of it is the server's. Two measurements show it while the load runs:

- **event-loop lag**: a task asks to wake every 10 ms; how late it wakes is how late any timestamp can be (a
  burst of requests started at once stalls the loop as surely as too many streams do);
- **CPU** of this process (one event loop uses at most one core).

From them: whether (and for what share of the load) the client was saturated, which latency figures its delay
can distort by more than 5%, and how many streams this machine's client could drive at the observed chunk rate.
A loop that ran late while using little CPU was starved by other processes (``limited_by: "machine"``): then the
stream estimate is withheld, since the client's own cost did not set the limit.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from effmon.metrics.series import percentile

TICK_S = 0.010
WINDOW_S = 0.5
LATE_SATURATED = 0.25
"""A half-second window in which the loop ran late for over this share of the time (the sum of its lags over the
window: one 160 ms stall, or many small ones) had a loop that could not keep up."""
CPU_SATURATED = 0.90
"""...or whose CPU use was over this share of the one core an event loop can use."""
SHARE_FLAGGED = 0.05
"""The load is flagged when more than this share of its windows were saturated."""
DISTORTION = 0.05
"""A latency figure is marked when the client's loop lag (at the same quantile) is more than this share of it."""
HEADROOM = 0.7
"""The CPU share of one core counted as usable when estimating how many streams this machine can drive."""
OWN_WORK = 0.5
"""A saturated window whose loop used less than this share of a core was late for want of the CPU, not because
of its own work: other processes held this machine (a busy machine, not too many streams)."""


@dataclass
class ClientWatch:
    """Samples loop lag (100 Hz) and process CPU (2 Hz) while :meth:`run` is running."""

    lags: list[float] = field(default_factory=list)
    windows: list[tuple[float, float]] = field(default_factory=list)
    """(share of the window the loop ran late, CPU share of one core) per half-second window."""
    cpu_s: float = 0.0
    wall_s: float = 0.0

    async def run(self) -> None:
        loop_start, cpu_start = time.perf_counter(), time.process_time()
        win_start, win_cpu, win_lags = loop_start, cpu_start, []
        try:
            while True:
                before = time.perf_counter()
                await asyncio.sleep(TICK_S)
                now = time.perf_counter()
                lag = max(0.0, now - before - TICK_S)
                self.lags.append(lag)
                win_lags.append(lag)
                if now - win_start >= WINDOW_S:
                    cpu = time.process_time()
                    wall = now - win_start
                    self.windows.append((sum(win_lags) / wall, (cpu - win_cpu) / wall))
                    win_start, win_cpu, win_lags = now, cpu, []
        finally:
            self.cpu_s = time.process_time() - cpu_start
            self.wall_s = time.perf_counter() - loop_start

    def report(self, chunks: int, concurrency: int) -> dict[str, Any]:
        """What the watch saw, for the summary and the session: ``chunks`` is every content chunk the load
        received, ``concurrency`` the streams it kept open."""
        saturated = [w for w in self.windows if w[0] > LATE_SATURATED or w[1] > CPU_SATURATED]
        share = len(saturated) / len(self.windows) if self.windows else 0.0
        starved = sum(1 for w in saturated if w[1] < OWN_WORK)
        cpu_share = self.cpu_s / self.wall_s if self.wall_s else None
        capacity = None
        if chunks and self.cpu_s > 0 and self.wall_s > 0 and concurrency > 0:
            cpu_per_chunk = self.cpu_s / chunks
            chunks_per_stream_s = chunks / self.wall_s / concurrency
            capacity = int(HEADROOM / cpu_per_chunk / chunks_per_stream_s)
        # Late mostly while idle, or an estimate above the streams that saturated it: the client's own CPU per
        # chunk was not what held it back, so it cannot say how many streams this machine drives.
        machine_busy = bool(saturated) and (starved > len(saturated) / 2 or (capacity or 0) >= concurrency)
        if machine_busy:
            capacity = None
        return {
            "loop_lag_p50_s": percentile(self.lags, 50),
            "loop_lag_p90_s": percentile(self.lags, 90),
            "loop_lag_p95_s": percentile(self.lags, 95),
            "loop_lag_mean_s": sum(self.lags) / len(self.lags) if self.lags else None,
            "loop_lag_p99_s": percentile(self.lags, 99),
            "loop_lag_max_s": max(self.lags) if self.lags else None,
            "cpu_share": cpu_share,
            "cores": os.cpu_count(),
            "saturated_share": share,
            "saturated": share > SHARE_FLAGGED,
            "streams_capacity": capacity,
            "limited_by": ("machine" if machine_busy else "client") if share > SHARE_FLAGGED else None,
        }


SENT_LATE = ("ttft_s", "e2e_s")
"""Figures that run from a request's start, so a request sent late (``send_delay_*``) carries its delay in full."""


def affected(figures: dict[str, dict[str, float | None]], client: dict[str, Any]) -> dict[str, list[str]]:
    """The figures the client's own delay can move by more than 5%: {"ttft_s": ["p99", ...], ...}. A figure at
    quantile q is set against the loop lag at the same quantile (the mean against the mean lag): how late a
    timestamp typically is, where that figure sits (``client``: :meth:`ClientWatch.report`); TTFT and E2E also
    against how long requests waited in the client before their headers went out (a burst of starts)."""
    out: dict[str, list[str]] = {}
    for key, values in figures.items():
        marked = []
        for q, v in values.items():
            own = client.get(f"loop_lag_{q}_s") or 0.0
            if key in SENT_LATE:
                own = max(own, client.get(f"send_delay_{q}_s") or 0.0)
            if v is not None and v > 0 and own > DISTORTION * v:
                marked.append(q)
        if marked:
            out[key] = marked
    return out
