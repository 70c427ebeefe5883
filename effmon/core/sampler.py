"""One sampling service: one thread, per-channel rates, drift-corrected timing.

Each source exposes channels with their own interval. The sampler thread runs every
due channel in turn and hands the rows to a sink. Ticks are scheduled on a fixed grid
(``next += interval``), so timing does not drift; ticks missed while the thread was busy
are skipped and counted, never run in a burst.

A channel that raises is marked failed with its error and retried with exponential
back-off. A channel that takes longer than ``slow_after_s`` is moved to a single
"slow lane" worker thread, so a slow or hung source (a stuck driver call, a network
scrape) never delays the others; while its read is in flight, its due ticks are skipped.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from effmon.core.clock import RealClock
from effmon.core.declare import Row
from effmon.core.source import Source

Sink = Callable[[list[Row]], None]

MAX_BACKOFF_S = 60.0


@dataclass
class ChannelState:
    source: str
    channel: str
    interval: float
    origin: float = 0.0
    n: int = 0
    reads: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    missed_ticks: int = 0
    last_ok: float | None = None
    last_error: str | None = None
    total_cost_s: float = 0.0
    slow_lane: bool = False
    in_flight: concurrent.futures.Future[Any] | None = field(default=None, repr=False)

    @property
    def next_due(self) -> float:
        """Due times sit on an exact grid, origin + n * interval: no float drift accumulates."""
        return self.origin + self.n * self.interval

    @property
    def state(self) -> str:
        if self.consecutive_failures:
            return "failed"
        if self.slow_lane:
            return "slow"
        return "ok" if self.reads else "waiting"

    def snapshot(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "channel": self.channel,
            "state": self.state,
            "interval_s": self.interval,
            "reads": self.reads,
            "failures": self.failures,
            "missed_ticks": self.missed_ticks,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "mean_cost_s": self.total_cost_s / self.reads if self.reads else None,
        }


class Sampler:
    def __init__(self, sources: list[Source], sink: Sink, clock: Any = None, slow_after_s: float = 0.25):
        self.sources = sources
        self.sink = sink
        self.clock = clock or RealClock()
        self.slow_after_s = slow_after_s
        self.stop_event = threading.Event()
        self.channels: list[tuple[Source, ChannelState]] = []
        start = self.clock.now()
        for source in sources:
            for name, interval in source.channels.items():
                self.channels.append((source, ChannelState(source.name, name, interval, origin=start)))
        self._thread: threading.Thread | None = None
        self._slow_pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="effmon-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._slow_pool is not None:
            self._slow_pool.shutdown(wait=False, cancel_futures=True)

    def final_tick(self) -> None:
        """Read every channel once more, so slow ones (the energy counter) cover the session's end."""
        if self._thread is not None and self._thread.is_alive():
            return
        now = self.clock.now()
        for source, state in self.channels:
            if state.slow_lane or state.consecutive_failures:
                continue
            try:
                rows = source.read(state.channel, now)
            except Exception as exc:
                self._failed(state, now, exc)
                continue
            if rows:
                self.sink(rows)

    def retry_now(self, source_name: str) -> None:
        """Read a source's channels at the next tick, whatever their back-off (e.g. its server just came up)."""
        now = self.clock.now()
        for source, state in self.channels:
            if source.name == source_name:
                state.origin, state.n = now, 0

    def status(self) -> list[dict[str, Any]]:
        return [state.snapshot() for _, state in self.channels]

    # -- the loop --------------------------------------------------------------------
    def run(self, until: Callable[[float], bool] | None = None) -> None:
        """Sample until stopped (or until ``until(now)`` is true: used for replays)."""
        restart = getattr(self.clock, "restart", None)
        if restart is not None:
            restart()  # a replay's clock starts with the sampling, not when it was built
        origin = self.clock.now()
        for _, state in self.channels:
            state.origin, state.n = origin, 0
        while not self.stop_event.is_set():
            now = self.clock.now()
            self.tick(now)
            if until is not None and until(now):
                return
            next_due = min(state.next_due for _, state in self.channels)
            self.clock.wait_until(next_due, self.stop_event)

    def tick(self, now: float) -> None:
        self._collect_slow_lane(now)
        for source, state in self.channels:
            if state.next_due > now:
                continue
            self._schedule_next(state, now)
            if state.slow_lane:
                self._submit_slow(source, state, now)
                continue
            t0 = time.perf_counter()
            try:
                rows = source.read(state.channel, now)
            except Exception as exc:
                self._failed(state, now, exc)
                continue
            cost = time.perf_counter() - t0
            self._succeeded(state, now, cost)
            if cost > self.slow_after_s:
                state.slow_lane = True
            if rows:
                self.sink(rows)

    def _schedule_next(self, state: ChannelState, now: float) -> None:
        state.n += 1
        if state.next_due <= now:
            missed = int((now - state.next_due) / state.interval + 1e-9) + 1
            state.missed_ticks += missed
            state.n += missed

    def _succeeded(self, state: ChannelState, now: float, cost: float) -> None:
        state.reads += 1
        state.last_ok = now
        state.total_cost_s += cost
        state.consecutive_failures = 0

    def _failed(self, state: ChannelState, now: float, exc: BaseException) -> None:
        state.failures += 1
        state.consecutive_failures += 1
        state.last_error = f"{type(exc).__name__}: {exc}"
        backoff = min(MAX_BACKOFF_S, max(1.0, state.interval) * 2 ** (state.consecutive_failures - 1))
        state.origin, state.n = now + backoff, 0

    def _submit_slow(self, source: Source, state: ChannelState, now: float) -> None:
        if state.in_flight is not None:
            state.missed_ticks += 1
            return
        if self._slow_pool is None:
            self._slow_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="effmon-slow-lane")

        def job() -> tuple[list[Row], float]:
            t0 = time.perf_counter()
            return source.read(state.channel, now), time.perf_counter() - t0

        state.in_flight = self._slow_pool.submit(job)

    def _collect_slow_lane(self, now: float) -> None:
        for _, state in self.channels:
            future = state.in_flight
            if future is None or not future.done():
                continue
            state.in_flight = None
            try:
                rows, cost = future.result()
            except Exception as exc:
                self._failed(state, now, exc)
                continue
            self._succeeded(state, now, cost)
            if cost <= self.slow_after_s / 2:
                state.slow_lane = False  # it recovered: back to the sampler thread
            if rows:
                self.sink(rows)
