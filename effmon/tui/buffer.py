"""The dashboard's live buffers: the newest readings of a session, kept in memory and extended each refresh
with what was appended since (a refresh reads what is new, not its whole window). No Textual here."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from effmon.core.store import Series, SessionReader

if TYPE_CHECKING:
    import numpy as np

KEEP_S = 3600.0
"""The longest window the dashboard offers short of the whole session; older readings are dropped."""
LOOKAHEAD_S = 5.0


def bucket_max(t: np.ndarray, x: np.ndarray, start: float, end: float, buckets: int) -> list[float | None]:
    """Each bucket's maximum over [start, end] in time order, buckets with no reading left out (as
    ``SessionReader.envelope`` gives them)."""
    import numpy as np

    if end <= start:
        return []
    inside = (t >= start) & (t <= end)
    t, x = t[inside], x[inside]
    if not len(t):
        return []
    slot = ((t - start) / ((end - start) / max(1, buckets))).astype(np.int64)
    first = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
    return [None if v != v else v for v in np.fmax.reduceat(x, first).tolist()]


class RecentSeries:
    """The last ``KEEP_S`` seconds of a series entity, per instance."""

    def __init__(self, reader: SessionReader, entity: str, columns: Sequence[str]):
        self.reader, self.entity, self.columns = reader, entity, list(columns)
        self._reset()

    def _reset(self) -> None:
        self.cursor = 0
        self.until = -float("inf")
        self.by_key: dict[int, Series] = {}
        self.trimmed = False  # never dropped anything: holds the session from its start

    def at(self, t: float) -> dict[int, Series]:
        """Everything kept, read up to ``t`` (a replay cursor never sees the future)."""
        import numpy as np

        if t < self.until - LOOKAHEAD_S:  # the cursor went back: read again from the start
            self._reset()
        if t > self.until:
            read = self.reader.series(self.entity, self.columns, self.cursor, until=t)
            self.cursor, self.until = read.cursor, t
            for key, new in read.by_key.items():
                old = self.by_key.get(key)
                joined = (
                    new
                    if old is None
                    else Series({c: np.concatenate((old[c], new[c])) for c in new.arrays}, new.integer)
                )
                keep = joined.t >= t - KEEP_S
                self.by_key[key] = (
                    joined if keep.all() else Series({c: v[keep] for c, v in joined.arrays.items()}, joined.integer)
                )
        return self.by_key

    def covers(self, start: float) -> bool:
        """Whether the kept readings reach back to ``start`` (else ask the store)."""
        if not self.trimmed:
            return True
        firsts = [float(s.t[0]) for s in self.by_key.values() if len(s)]
        return bool(firsts) and min(firsts) <= start

    def envelope(
        self, columns: Sequence[str], start: float, end: float, buckets: int
    ) -> dict[int, list[tuple[Any, ...]]]:
        """Like ``SessionReader.envelope``, from memory when the kept readings cover the window."""
        by_key = self.at(end)
        if not self.covers(start):
            return self.reader.envelope(self.entity, columns, start, end, buckets)
        out: dict[int, list[tuple[Any, ...]]] = {}
        for key, s in sorted(by_key.items()):
            cols = [bucket_max(s.t, s[c], start, end, buckets) for c in columns if c in s]
            if cols and cols[0]:
                out[key] = list(zip(*cols, strict=True))
        return out


class RecentSpans:
    """Steps or requests that ended in the last ``KEEP_S`` seconds, read by cursor and kept as small tuples
    of the columns the panels read."""

    def __init__(self, reader: SessionReader, entity: str, columns: Sequence[str]):
        self.reader, self.entity = reader, entity
        self.columns = tuple(columns)
        self.row: Any = namedtuple(f"{entity}_row", self.columns)  # type: ignore[misc]
        self._reset()

    def _reset(self) -> None:
        self.cursor, self.until = 0, -float("inf")
        self.rows: list[Any] = []

    def _compact(self, rows: list[dict[str, Any]]) -> list[Any]:
        return [self.row(*[r.get(c) for c in self.columns]) for r in rows]

    def ended(self, start: float, end: float) -> list[Any]:
        """Rows that ended in [start, end], oldest first (attributes named as the columns)."""
        if end < self.until:
            self._reset()
        if end > self.until:
            new, self.cursor = self.reader.spans(self.entity, end_before=end, cursor=self.cursor)
            self.until = end
            self.rows = [r for r in self.rows + self._compact(new) if r.t_end >= end - KEEP_S]
        if start < end - KEEP_S:  # a longer window than is kept: from the store
            return self._compact(self.reader.spans(self.entity, end_after=start, end_before=end)[0])
        return [r for r in self.rows if start <= r.t_end <= end]
