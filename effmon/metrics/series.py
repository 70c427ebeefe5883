"""Time-weighted integrals over irregularly sampled series (float64 arrays, NaN = no reading).

Every average here is (1/T) ∫ x(t) dt with the trapezoid rule over the actual sample times, clipped to
the window by linear interpolation at its edges: dropping or adding samples moves the result only by the
sampling error, unlike a plain mean of samples. Missing readings are skipped and their neighbours joined.

Sums run left to right (``np.cumsum``, not numpy's pairwise ``sum``), so a result is the same number
whether it is computed here at once or extended sample by sample (``metrics.aggregate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def clean(t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop missing readings; samples come in time order (the store returns them so)."""
    import numpy as np

    ok = ~np.isnan(x)
    if ok.all():
        return t, x
    return t[ok], x[ok]


def interp(at: float, t0: float, x0: float, t1: float, x1: float) -> float:
    return x0 if t1 == t0 else x0 + (x1 - x0) * (at - t0) / (t1 - t0)


def running_sum(terms: np.ndarray, start: float = 0.0) -> float:
    """``start + terms[0] + terms[1] + ...`` strictly left to right."""
    import numpy as np

    if not len(terms):
        return start
    if start == 0.0:
        return float(np.cumsum(terms)[-1])
    return float(np.cumsum(np.concatenate(([start], terms)))[-1])


def pair_terms(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Twice the trapezoid area of each pair of neighbouring samples."""
    return (x[:-1] + x[1:]) * (t[1:] - t[:-1])


def integrate(
    t: np.ndarray, x: np.ndarray, start: float | None = None, end: float | None = None
) -> tuple[float, float]:
    """∫ x dt over [start, end] ∩ [first sample, last sample]; returns (integral, covered seconds)."""
    import numpy as np

    t, x = clean(t, x)
    if len(t) < 2:
        return 0.0, 0.0
    first, last = float(t[0]), float(t[-1])
    lo = first if start is None else max(start, first)
    hi = last if end is None else min(end, last)
    if hi <= lo:
        return 0.0, 0.0
    i0 = int(np.searchsorted(t, lo, "left"))  # first sample at or after lo
    i1 = int(np.searchsorted(t, hi, "right")) - 1  # last sample at or before hi
    if i0 > i1:  # lo and hi fall between the same two samples
        k = i1
        tk, xk, tn, xn = float(t[k]), float(x[k]), float(t[k + 1]), float(x[k + 1])
        ya, yb = interp(lo, tk, xk, tn, xn), interp(hi, tk, xk, tn, xn)
        return (ya + yb) / 2.0 * (hi - lo), hi - lo
    total = running_sum(pair_terms(t[i0 : i1 + 1], x[i0 : i1 + 1])) / 2.0
    if t[i0] > lo:  # the piece from lo to the first sample inside
        y = interp(lo, float(t[i0 - 1]), float(x[i0 - 1]), float(t[i0]), float(x[i0]))
        total += (y + float(x[i0])) / 2.0 * (float(t[i0]) - lo)
    if t[i1] < hi:
        y = interp(hi, float(t[i1]), float(x[i1]), float(t[i1 + 1]), float(x[i1 + 1]))
        total += (float(x[i1]) + y) / 2.0 * (hi - float(t[i1]))
    return total, hi - lo


def time_average(t: np.ndarray, x: np.ndarray, start: float | None = None, end: float | None = None) -> float | None:
    """Time-weighted mean over the window; the single value if only one sample lies in it."""
    area, covered = integrate(t, x, start, end)
    if covered > 0:
        return area / covered
    t, x = clean(t, x)
    inside = x[((t >= start) if start is not None else True) & ((t <= end) if end is not None else True)]
    return float(inside[0]) if len(inside) == 1 else None


def value_at(t: np.ndarray, x: np.ndarray, at: float) -> float | None:
    """Linear interpolation of the series at ``at``; None outside the samples."""
    import numpy as np

    t, x = clean(t, x)
    if not len(t) or at < t[0] or at > t[-1]:
        return None
    i = int(np.searchsorted(t, at, "left"))
    if t[i] == at:
        return float(x[i])
    return interp(at, float(t[i - 1]), float(x[i - 1]), float(t[i]), float(x[i]))


def interval_terms(t: np.ndarray, flags: np.ndarray, start: float | None, end: float | None) -> np.ndarray:
    """Each flagged sample's share of [start, end]: it holds until the next sample."""
    import numpy as np

    a = t[:-1] if start is None else np.maximum(t[:-1], start)
    b = t[1:] if end is None else np.minimum(t[1:], end)
    held = b - a
    return held[flags[:-1] & (held > 0)]


def time_where(t: np.ndarray, flags: np.ndarray, start: float | None = None, end: float | None = None) -> float:
    """Seconds during which ``flag`` held, each sample holding until the next one."""
    if len(t) < 2:
        return 0.0
    return running_sum(interval_terms(t, flags, start, end))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (as numpy's default), q in 0..100."""
    if not len(values):
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))
