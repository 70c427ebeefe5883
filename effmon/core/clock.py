"""Clocks the sampler runs on: real time, a replay at N× speed, or as fast as possible."""

from __future__ import annotations

import threading
import time


class RealClock:
    """Wall-clock time stamps; waits are interruptible by ``stop``."""

    def now(self) -> float:
        return time.time()

    def wait_until(self, t: float, stop: threading.Event) -> None:
        delay = t - time.time()
        if delay > 0:
            stop.wait(delay)


class ScaledClock:
    """Trace time that runs ``speed`` times faster than the wall clock, from ``start``."""

    def __init__(self, start: float, speed: float):
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.start, self.speed = start, speed
        self._origin = time.monotonic()

    def restart(self) -> None:
        self._origin = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self._origin) * self.speed

    def wait_until(self, t: float, stop: threading.Event) -> None:
        delay = (t - self.now()) / self.speed
        if delay > 0:
            stop.wait(delay)


class VirtualClock:
    """Jumps straight to the next due time: replays as fast as the machine can."""

    def __init__(self, start: float):
        self.t = start

    def now(self) -> float:
        return self.t

    def wait_until(self, t: float, stop: threading.Event) -> None:
        self.t = max(self.t, t)
