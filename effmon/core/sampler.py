"""One sampling service: per-channel rates, drift-corrected timing, every source isolated from the others.

Each source exposes channels with their own interval. Live, each source has its own sampler thread (a
"lane") that runs its due channels in turn and hands the rows to a sink: a source whose call hangs (a stuck
driver, a network scrape that never answers) stops only itself. Ticks are scheduled on a fixed grid
(``next += interval``), so timing does not drift; ticks missed while a lane was busy are skipped and counted,
never run in a burst. A replay (``run``/``tick`` with a virtual clock) reads every source in one thread, in
order, so it is deterministic.

A channel that raises is marked failed with its error and retried with exponential back-off. A channel that
takes longer than ``slow_after_s`` moves to its source's "slow lane" worker, so a slow call (the energy
counter) never delays the cheap gauges of the same source. A read that has not returned after
``hung_after_s`` marks its channel ``hung`` in the status the session records (and the recording says so).
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
    reading_since: float | None = None
    """The sampler clock's time when the read in progress started (None between reads)."""
    hung_after_s: float = 10.0

    @property
    def next_due(self) -> float:
        """Due times sit on an exact grid, origin + n * interval: no float drift accumulates."""
        return self.origin + self.n * self.interval

    def hung_for(self, now: float) -> float | None:
        """How long the read in progress has not returned, when that is longer than ``hung_after_s``."""
        since = self.reading_since
        if since is None or now - since <= self.hung_after_s:
            return None
        return now - since

    def state_at(self, now: float | None = None) -> str:
        """ok, waiting, slow, failed, or (given the time) hung."""
        if now is not None and self.hung_for(now) is not None:
            return "hung"
        if self.consecutive_failures:
            return "failed"
        if self.slow_lane:
            return "slow"
        return "ok" if self.reads else "waiting"

    @property
    def state(self) -> str:
        return self.state_at()

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        state = self.state_at(now)
        return {
            "source": self.source,
            "channel": self.channel,
            "state": state,
            "reading_since": self.reading_since if state == "hung" else None,
            "interval_s": self.interval,
            "reads": self.reads,
            "failures": self.failures,
            "missed_ticks": self.missed_ticks,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "mean_cost_s": self.total_cost_s / self.reads if self.reads else None,
        }


class Sampler:
    def __init__(
        self,
        sources: list[Source],
        sink: Sink,
        clock: Any = None,
        slow_after_s: float = 0.25,
        hung_after_s: float = 10.0,
    ):
        self.sources = sources
        self.sink = sink
        self.clock = clock or RealClock()
        self.slow_after_s = slow_after_s
        self.stop_event = threading.Event()
        self.channels: list[tuple[Source, ChannelState]] = []
        start = self.clock.now()
        for source in sources:
            for name, interval in source.channels.items():
                state = ChannelState(source.name, name, interval, origin=start)
                state.hung_after_s = max(hung_after_s, 3 * interval)  # a 60 s channel is not hung at 10 s
                self.channels.append((source, state))
        self._lanes: dict[str, threading.Thread] = {}
        self._pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """One thread per source: a hung call stops its own source, never another."""
        for source in self.sources:
            lane = [(src, state) for src, state in self.channels if src is source]
            thread = threading.Thread(
                target=self._loop, args=(lane,), name=f"effmon-sampler-{source.name}", daemon=True
            )
            self._lanes[source.name] = thread
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every lane, waiting at most ``timeout`` in all: a lane stuck in a hung call is left behind."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        now = self.clock.now()
        hung = {state.source for _, state in self.channels if state.hung_for(now) is not None}
        for name, thread in self._lanes.items():
            if name not in hung:  # a lane inside a hung call is not waited for: it may never return
                thread.join(max(0.0, deadline - time.monotonic()))
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

    def final_tick(self) -> None:
        """Read every channel once more, so slow ones (the energy counter) cover the session's end; a channel
        whose read is still in progress (hung) or whose lane is still running is left alone."""
        now = self.clock.now()
        for source, state in self.channels:
            lane = self._lanes.get(source.name)
            if lane is not None and lane.is_alive():
                continue
            if state.slow_lane or state.consecutive_failures or state.reading_since is not None:
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
        now = self.clock.now()
        return [state.snapshot(now) for _, state in self.channels]

    # -- the loop --------------------------------------------------------------------
    def run(self, until: Callable[[float], bool] | None = None) -> None:
        """Sample every source in this thread until stopped (or until ``until(now)`` is true: replays)."""
        restart = getattr(self.clock, "restart", None)
        if restart is not None:
            restart()  # a replay's clock starts with the sampling, not when it was built
        self._loop(self.channels, until)

    def _loop(self, channels: list[tuple[Source, ChannelState]], until: Callable[[float], bool] | None = None) -> None:
        origin = self.clock.now()
        for _, state in channels:
            state.origin, state.n = origin, 0
        while not self.stop_event.is_set():
            now = self.clock.now()
            self._tick(channels, now)
            if until is not None and until(now):
                return
            next_due = min(state.next_due for _, state in channels)
            self.clock.wait_until(next_due, self.stop_event)

    def tick(self, now: float) -> None:
        self._tick(self.channels, now)

    def _tick(self, channels: list[tuple[Source, ChannelState]], now: float) -> None:
        self._collect_slow_lane(channels, now)
        for source, state in channels:
            if state.next_due > now:
                continue
            self._schedule_next(state, now)
            if state.slow_lane:
                self._submit_slow(source, state, now)
                continue
            t0 = time.perf_counter()
            state.reading_since = now
            try:
                rows = source.read(state.channel, now)
            except Exception as exc:
                self._failed(state, now, exc)
                continue
            finally:
                state.reading_since = None
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
        pool = self._pools.get(source.name)
        if pool is None:
            pool = self._pools[source.name] = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"effmon-slow-{source.name}"
            )

        def job() -> tuple[list[Row], float]:
            t0 = time.perf_counter()
            return source.read(state.channel, now), time.perf_counter() - t0

        state.reading_since = now
        state.in_flight = pool.submit(job)

    def _collect_slow_lane(self, channels: list[tuple[Source, ChannelState]], now: float) -> None:
        for _, state in channels:
            future = state.in_flight
            if future is None or not future.done():
                continue
            state.in_flight = None
            state.reading_since = None
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
