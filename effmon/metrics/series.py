"""Time-weighted integrals over irregularly sampled series.

Every average here is (1/T) ∫ x(t) dt with the trapezoid rule over the actual sample
times, clipped to the window by linear interpolation at its edges: dropping or adding
samples moves the result only by the sampling error, unlike a plain mean of samples.
Missing readings (None) are skipped and the neighbours joined.
"""

from __future__ import annotations

from collections.abc import Sequence


def _clean(ts: Sequence[float], xs: Sequence[float | None]) -> tuple[Sequence[float], Sequence[float]]:
    """Drop missing readings; samples must come in time order (the store returns them so)."""
    if None not in xs:
        return ts, xs  # type: ignore[return-value]
    pairs = [(t, x) for t, x in zip(ts, xs) if x is not None]
    if not pairs:
        return [], []
    t_out, x_out = zip(*pairs)
    return t_out, x_out


def _interp(t: float, t0: float, x0: float, t1: float, x1: float) -> float:
    return x0 if t1 == t0 else x0 + (x1 - x0) * (t - t0) / (t1 - t0)


def integrate(
    ts: Sequence[float], xs: Sequence[float | None], start: float | None = None, end: float | None = None
) -> tuple[float, float]:
    """∫ x dt over [start, end] ∩ [first sample, last sample]; returns (integral, covered seconds)."""
    import bisect

    t, x = _clean(ts, xs)
    if len(t) < 2:
        return 0.0, 0.0
    lo = t[0] if start is None else max(start, t[0])
    hi = t[-1] if end is None else min(end, t[-1])
    if hi <= lo:
        return 0.0, 0.0
    i0 = bisect.bisect_left(t, lo)  # first sample at or after lo
    i1 = bisect.bisect_right(t, hi) - 1  # last sample at or before hi
    total = 0.0
    if i0 <= i1:
        tt, xx = t[i0 : i1 + 1], x[i0 : i1 + 1]
        total = sum((xa + xb) * (tb - ta) for ta, tb, xa, xb in zip(tt, tt[1:], xx, xx[1:])) / 2.0
        if t[i0] > lo:  # the piece from lo to the first sample inside
            y = _interp(lo, t[i0 - 1], x[i0 - 1], t[i0], x[i0])
            total += (y + x[i0]) / 2.0 * (t[i0] - lo)
        if t[i1] < hi:
            y = _interp(hi, t[i1], x[i1], t[i1 + 1], x[i1 + 1])
            total += (x[i1] + y) / 2.0 * (hi - t[i1])
    else:  # lo and hi fall between the same two samples
        k = i1
        ya, yb = _interp(lo, t[k], x[k], t[k + 1], x[k + 1]), _interp(hi, t[k], x[k], t[k + 1], x[k + 1])
        total = (ya + yb) / 2.0 * (hi - lo)
    return total, hi - lo


def time_average(
    ts: Sequence[float], xs: Sequence[float | None], start: float | None = None, end: float | None = None
) -> float | None:
    """Time-weighted mean over the window; the single value if only one sample lies in it."""
    area, covered = integrate(ts, xs, start, end)
    if covered > 0:
        return area / covered
    t, x = _clean(ts, xs)
    inside = [v for tv, v in zip(t, x) if (start is None or tv >= start) and (end is None or tv <= end)]
    return inside[0] if len(inside) == 1 else None


def value_at(ts: Sequence[float], xs: Sequence[float | None], at: float) -> float | None:
    """Linear interpolation of the series at ``at``; None outside the samples."""
    t, x = _clean(ts, xs)
    if not t or at < t[0] or at > t[-1]:
        return None
    import bisect

    i = bisect.bisect_left(t, at)
    if t[i] == at:
        return x[i]
    return _interp(at, t[i - 1], x[i - 1], t[i], x[i])


def time_where(
    ts: Sequence[float], flags: Sequence[bool | None], start: float | None = None, end: float | None = None
) -> float:
    """Seconds during which ``flag`` held, each sample holding until the next one."""
    total = 0.0
    for i in range(len(ts) - 1):
        if not flags[i]:
            continue
        a = ts[i] if start is None else max(ts[i], start)
        b = ts[i + 1] if end is None else min(ts[i + 1], end)
        if b > a:
            total += b - a
    return total


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (as numpy's default), q in 0..100."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
