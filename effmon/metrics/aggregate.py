"""Reductions of a session's series over a window, behind one interface with two implementations.

``ExactAggregation`` reads each series once as arrays and reduces it over any window: what reports use.
``IncrementalAggregation`` keeps running sums and extends them with what was appended since the last
call: what the dashboard uses, so a refresh costs the new rows, not the session. It only answers windows
that start at the session start (the dashboard's "so far") and raises ``ValueError`` for any other.
Both add the same terms in the same order, so they give the same numbers; metric definitions never know
which one they were given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from effmon.core.store import Series, SessionReader
from effmon.metrics.series import (
    clean,
    integrate,
    interp,
    interval_terms,
    pair_terms,
    running_sum,
    time_average,
    time_where,
    value_at,
)
from effmon.metrics.window import Window

if TYPE_CHECKING:
    import numpy as np

LOOKAHEAD_S = 5.0
"""The incremental reader also reads this far past the window's end, for the value at the edge."""


@dataclass(frozen=True)
class Reduction:
    """One column of one instance over a window."""

    average: float | None
    """Time-weighted mean (trapezoid, edges interpolated); the single value if one sample lies inside."""
    integral: float
    covered: float
    """Seconds the integral covers (the window ∩ the samples)."""
    maximum: Any
    last: Any
    """Of the samples inside the window, as stored (an INTEGER column gives ints)."""


@dataclass(frozen=True)
class FlagTime:
    seconds: float
    bits: int
    """OR of every reading inside the window."""


@dataclass(frozen=True)
class CounterDelta:
    """A monotonic counter's increase over the window, interpolated between its (rare) readings."""

    delta: float
    start: float
    end: float


class Aggregation(Protocol):
    reader: SessionReader

    def keys(self, entity: str, window: Window) -> list[int]: ...

    def samples(self, entity: str, key: int, window: Window) -> int: ...

    def reduce(self, entity: str, key: int, column: str, window: Window) -> Reduction: ...

    def flag_time(self, entity: str, key: int, column: str, mask: int, window: Window) -> FlagTime | None: ...

    def counter(self, entity: str, key: int, column: str, window: Window) -> CounterDelta | None: ...

    def integral_between(self, entity: str, key: int, column: str, start: float, end: float) -> float | None: ...

    def spans(self, entity: str, window: Window) -> list[dict[str, Any]]: ...


class ExactAggregation:
    """Every reduction computed from the whole stored series: exact for any window."""

    def __init__(self, reader: SessionReader):
        self.reader = reader
        self._series: dict[str, dict[int, Series]] = {}
        self._spans: dict[str, list[dict[str, Any]]] = {}

    def load(self, entity: str) -> dict[int, Series]:
        if entity not in self._series:
            ent = self.reader.entities().get(entity)
            columns = [m.name for m in ent.metrics] if ent is not None else []
            self._series[entity] = self.reader.series(entity, columns).by_key
        return self._series[entity]

    def _inside(self, s: Series, window: Window) -> slice:
        import numpy as np

        t = s.t
        return slice(int(np.searchsorted(t, window.start, "left")), int(np.searchsorted(t, window.end, "right")))

    def keys(self, entity: str, window: Window) -> list[int]:
        out = []
        for key, s in sorted(self.load(entity).items()):
            inside = self._inside(s, window)
            if inside.stop > inside.start:
                out.append(key)
        return out

    def samples(self, entity: str, key: int, window: Window) -> int:
        s = self.load(entity).get(key)
        if s is None:
            return 0
        inside = self._inside(s, window)
        return max(0, inside.stop - inside.start)

    def reduce(self, entity: str, key: int, column: str, window: Window) -> Reduction:
        import numpy as np

        s = self.load(entity).get(key)
        if s is None or column not in s:
            return Reduction(None, 0.0, 0.0, None, None)
        t, x = s.t, s[column]
        area, covered = integrate(t, x, window.start, window.end)
        average = area / covered if covered > 0 else time_average(t, x, window.start, window.end)
        inside = x[self._inside(s, window)]
        inside = inside[~np.isnan(inside)]
        maximum = s.py(column, float(inside.max())) if len(inside) else None
        last = s.py(column, float(inside[-1])) if len(inside) else None
        return Reduction(average, area, covered, maximum, last)

    def flag_time(self, entity: str, key: int, column: str, mask: int, window: Window) -> FlagTime | None:
        import numpy as np

        s = self.load(entity).get(key)
        if s is None or column not in s:
            return None
        x = s[column]
        inside = x[self._inside(s, window)]
        inside = inside[~np.isnan(inside)]
        if not len(inside):
            return None
        raw = np.nan_to_num(x, nan=0.0).astype(np.int64)
        seconds = time_where(s.t, (raw & mask) != 0, window.start, window.end)
        return FlagTime(seconds, int(np.bitwise_or.reduce(inside.astype(np.int64))))

    def counter(self, entity: str, key: int, column: str, window: Window) -> CounterDelta | None:
        s = self.load(entity).get(key)
        if s is None or column not in s:
            return None
        t, x = clean(s.t, s[column])
        if len(t) < 2:
            return None
        a, b = max(window.start, float(t[0])), min(window.end, float(t[-1]))
        if b <= a:
            return None
        va, vb = value_at(t, x, a), value_at(t, x, b)
        if va is None or vb is None:
            return None
        return CounterDelta(vb - va, a, b)

    def integral_between(self, entity: str, key: int, column: str, start: float, end: float) -> float | None:
        s = self.load(entity).get(key)
        if s is None or column not in s:
            return None
        return integrate(s.t, s[column], start, end)[0]

    def spans(self, entity: str, window: Window) -> list[dict[str, Any]]:
        if entity not in self._spans:
            self._spans[entity] = self.reader.spans(entity)[0]
        return [r for r in self._spans[entity] if window.holds_span(r["t_start"], r["t_end"])]

    def series(self, entity: str) -> dict[int, Series]:
        """Whole series, for exports that need every sample (the EfficientLLM time series, CSV)."""
        return self.load(entity)


@dataclass
class _Column:
    """A running reduction of one column, from the session start to the last sample consumed."""

    first_t: float | None = None
    first_x: float | None = None
    last_t: float | None = None
    last_x: float | None = None
    twice_area: float = 0.0
    n: int = 0
    maximum: float | None = None

    def consume(self, t: np.ndarray, x: np.ndarray) -> None:
        import numpy as np

        t, x = clean(t, x)
        if not len(t):
            return
        if self.first_t is None:
            self.first_t, self.first_x = float(t[0]), float(x[0])
        top = float(x.max())
        self.maximum = top if self.maximum is None else max(self.maximum, top)
        self.n += len(t)
        if self.last_t is not None:
            t = np.concatenate((np.array([self.last_t]), t))
            x = np.concatenate((np.array([self.last_x]), x))
        self.twice_area = running_sum(pair_terms(t, x), self.twice_area)
        self.last_t, self.last_x = float(t[-1]), float(x[-1])


@dataclass
class _Flags:
    seconds: float = 0.0
    bits: int = 0
    seen: bool = False
    last_t: float | None = None
    last_flag: bool = False


@dataclass
class _Instance:
    """What the incremental reader holds of one entity instance (one GPU)."""

    integer: frozenset[str] = frozenset()
    columns: dict[str, _Column] = field(default_factory=dict)
    flags: dict[tuple[str, int], _Flags] = field(default_factory=dict)
    samples: int = 0
    pending: Series | None = None
    """Samples read past the window's end: consumed when the window gets there, used for its edge now."""

    def next_reading(self, column: str) -> tuple[float, float] | None:
        """The first reading of ``column`` after the window's end (for the value at the edge)."""
        import numpy as np

        if self.pending is None or column not in self.pending:
            return None
        x = self.pending[column]
        ok = np.flatnonzero(~np.isnan(x))
        return (float(self.pending.t[ok[0]]), float(x[ok[0]])) if len(ok) else None

    def edge(self, c: _Column, column: str, end: float) -> tuple[float, float] | None:
        """(time, value) where the window ends, when a reading after the end places it between two."""
        nxt = self.next_reading(column)
        if nxt is None or c.last_t is None or c.last_x is None or c.last_t >= end:
            return None
        return end, interp(end, c.last_t, c.last_x, nxt[0], nxt[1])


class IncrementalAggregation:
    """Running reductions for windows that start at the session start and only grow.

    Each call first consumes what was appended up to the window's end (and reads up to
    ``LOOKAHEAD_S`` further, for the value at the edge). Memory stays flat: consumed samples are
    folded into running sums and dropped. A window that does not start at the session start, or
    that moves back, raises ``ValueError``: build a new one (the dashboard does when its cursor
    goes back)."""

    def __init__(self, reader: SessionReader):
        self.reader = reader
        self._cursor: dict[str, int] = {}
        self._instances: dict[str, dict[int, _Instance]] = {}
        self._advanced: dict[str, float] = {}
        self._end = -float("inf")
        self._span_rows: dict[str, list[dict[str, Any]]] = {}
        self._span_cursor: dict[str, int] = {}

    def _check(self, window: Window) -> None:
        if not window.from_session_start:
            raise ValueError("IncrementalAggregation answers windows from the session start only")
        if window.end < self._end:
            raise ValueError("IncrementalAggregation cannot go back in time; make a new one")
        self._end = window.end

    def _advance(self, entity: str, window: Window) -> dict[int, _Instance]:
        import numpy as np

        self._check(window)
        instances = self._instances.setdefault(entity, {})
        if self._advanced.get(entity) == window.end:
            return instances
        self._advanced[entity] = window.end
        ent = self.reader.entities().get(entity)
        columns = [m.name for m in ent.metrics] if ent is not None else []
        read = self.reader.series(entity, columns, self._cursor.get(entity, 0), until=window.end + LOOKAHEAD_S)
        self._cursor[entity] = read.cursor
        for key, new in read.by_key.items():
            inst = instances.setdefault(key, _Instance(integer=new.integer))
            inst.pending = new if inst.pending is None else _concat(inst.pending, new)
        for inst in instances.values():
            if inst.pending is None:
                continue
            n = int(np.searchsorted(inst.pending.t, window.end, "right"))
            if n:
                self._consume(inst, _cut(inst.pending, 0, n))
                inst.pending = _cut(inst.pending, n, len(inst.pending)) if n < len(inst.pending) else None
        return instances

    @staticmethod
    def _consume(inst: _Instance, s: Series) -> None:
        import numpy as np

        inst.samples += len(s)
        for column, x in s.arrays.items():
            if column != "t":
                inst.columns.setdefault(column, _Column()).consume(s.t, x)
        for (column, mask), f in inst.flags.items():
            raw = s[column]
            _fold_flags(f, s.t, (np.nan_to_num(raw, nan=0.0).astype(np.int64) & mask) != 0, raw)

    def keys(self, entity: str, window: Window) -> list[int]:
        return sorted(k for k, inst in self._advance(entity, window).items() if inst.samples)

    def samples(self, entity: str, key: int, window: Window) -> int:
        inst = self._advance(entity, window).get(key)
        return inst.samples if inst else 0

    def reduce(self, entity: str, key: int, column: str, window: Window) -> Reduction:
        inst = self._advance(entity, window).get(key)
        c = inst.columns.get(column) if inst else None
        if inst is None or c is None or c.first_t is None or c.last_t is None or c.last_x is None:
            return Reduction(None, 0.0, 0.0, None, None)
        typed = Series({}, inst.integer)
        maximum, last = typed.py(column, c.maximum), typed.py(column, c.last_x)
        area, hi = c.twice_area / 2.0, c.last_t
        edge = inst.edge(c, column, window.end)
        if edge is not None:
            hi = edge[0]
            area += (c.last_x + edge[1]) / 2.0 * (hi - c.last_t)
        covered = hi - c.first_t
        if covered > 0:
            return Reduction(area / covered, area, covered, maximum, last)
        return Reduction(c.last_x if c.n == 1 else None, 0.0, 0.0, maximum, last)

    def flag_time(self, entity: str, key: int, column: str, mask: int, window: Window) -> FlagTime | None:
        inst = self._advance(entity, window).get(key)
        if inst is None:
            return None
        f = inst.flags.get((column, mask))
        if f is None:  # first asked now: fold what was consumed so far, once
            f = inst.flags[(column, mask)] = _Flags()
            self._refold(entity, key, column, mask, f, window)
        if not f.seen:
            return None
        seconds = f.seconds
        if f.last_flag and f.last_t is not None and inst.pending is not None and len(inst.pending):
            held = min(float(inst.pending.t[0]), window.end) - f.last_t
            if held > 0:
                seconds += held
        return FlagTime(seconds, f.bits)

    def _refold(self, entity: str, key: int, column: str, mask: int, f: _Flags, window: Window) -> None:
        import numpy as np

        s = self.reader.series(entity, [column], until=window.end + LOOKAHEAD_S).by_key.get(key)
        if s is None:
            return
        n = int(np.searchsorted(s.t, window.end, "right"))
        raw = s[column][:n]
        _fold_flags(f, s.t[:n], (np.nan_to_num(raw, nan=0.0).astype(np.int64) & mask) != 0, raw)

    def counter(self, entity: str, key: int, column: str, window: Window) -> CounterDelta | None:
        inst = self._advance(entity, window).get(key)
        c = inst.columns.get(column) if inst else None
        if inst is None or c is None or c.first_t is None or c.first_x is None or c.last_t is None:
            return None
        b, vb = c.last_t, c.last_x
        edge = inst.edge(c, column, window.end)
        if edge is not None:
            b, vb = edge
        if b <= c.first_t or vb is None:
            return None
        return CounterDelta(vb - c.first_x, c.first_t, b)

    def integral_between(self, entity: str, key: int, column: str, start: float, end: float) -> float | None:
        return None  # the dashboard does not check the counter against the integral

    def spans(self, entity: str, window: Window) -> list[dict[str, Any]]:
        self._check(window)
        rows, cursor = self.reader.spans(
            entity, end_before=window.end + LOOKAHEAD_S, cursor=self._span_cursor.get(entity, 0)
        )
        self._span_cursor[entity] = cursor
        kept = self._span_rows.setdefault(entity, [])
        kept.extend(rows)
        return [r for r in kept if window.holds_span(r["t_start"], r["t_end"])]


def _fold_flags(f: _Flags, t: np.ndarray, flags: np.ndarray, raw: np.ndarray) -> None:
    import numpy as np

    if not len(t):
        return
    if f.last_t is not None:
        t = np.concatenate(([f.last_t], t))
        flags = np.concatenate(([f.last_flag], flags))
    f.seconds = running_sum(interval_terms(t, flags, None, None), f.seconds)
    ok = raw[~np.isnan(raw)]
    if len(ok):
        f.seen = True
        f.bits |= int(np.bitwise_or.reduce(ok.astype(np.int64)))
    f.last_t, f.last_flag = float(t[-1]), bool(flags[-1])


def _cut(s: Series, a: int, b: int) -> Series:
    return Series({c: v[a:b] for c, v in s.arrays.items()}, s.integer)


def _concat(a: Series, b: Series) -> Series:
    import numpy as np

    return Series({c: np.concatenate((a[c], b[c])) for c in a.arrays}, a.integer)
