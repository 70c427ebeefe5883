"""Which stretch of a session a summary covers: the whole session, a phase, or START:END seconds."""

from __future__ import annotations

import math
from dataclasses import dataclass

from effmon.core.store import SessionReader


class MetricsError(Exception):
    """A summary cannot be computed; the message says why and what to do."""


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    label: str
    session_start: float
    session_end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def from_session_start(self) -> bool:
        return self.start <= self.session_start

    def relative(self) -> list[float]:
        return [round(self.start - self.session_start, 6), round(self.end - self.session_start, 6)]

    def holds_span(self, t_start: float, t_end: float) -> bool:
        """A step or request counts in the window when its midpoint lies in it."""
        mid = (t_start + t_end) / 2.0
        return self.start <= mid <= self.end


def _seconds(text: str, default: float, window: str) -> float:
    if not text.strip():
        return default
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def resolve_window(reader: SessionReader, window: str | None = None, phase: str | None = None) -> Window:
    lo, hi = reader.time_range()
    name = reader.meta().get("name", reader.path.name)
    if lo is None or hi is None or hi <= lo:
        raise MetricsError(f"session {name} holds no samples to compute metrics from (is it empty, or just started?)")
    if phase:
        phases = reader.phases()
        match = [p for p in phases if p["name"] == phase]
        if not match:
            known = ", ".join(str(p["name"]) for p in phases) or "none recorded"
            raise MetricsError(f"no phase {phase!r} in session {name}; phases: {known}")
        return Window(match[0]["t_start"], match[0]["t_end"], f"phase {phase}", lo, hi)
    if window:
        try:
            a_text, b_text = window.split(":")
            a = _seconds(a_text, 0.0, window)
            b = _seconds(b_text, hi - lo, window)
        except ValueError:
            raise MetricsError(
                f"--window {window!r}: use START:END in seconds from the session start, e.g. 10:60"
            ) from None
        a = a if a >= 0 else (hi - lo) + a
        b = b if b >= 0 else (hi - lo) + b
        if b <= a:
            raise MetricsError(f"--window {window!r}: the end must come after the start")
        if a >= hi - lo or b <= 0:
            raise MetricsError(f"--window {window!r} is outside the session, which lasts {hi - lo:.1f} s")
        return Window(lo + max(a, 0.0), lo + min(b, hi - lo), f"window {window}", lo, hi)
    return Window(lo, hi, "whole session", lo, hi)


def so_far(session_start: float, end: float) -> Window:
    """The dashboard's window: from the session start to the cursor."""
    return Window(session_start, end, "so far", session_start, end)
