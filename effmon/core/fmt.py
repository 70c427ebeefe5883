"""Plain formatting of numbers with units, shared by every view."""

from __future__ import annotations

import time


def human_bytes(n: float | None) -> str:
    if n is None:
        return "N/A"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def human_duration(s: float | None) -> str:
    if s is None:
        return "N/A"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def human_energy(j: float | None) -> str:
    if j is None:
        return "N/A"
    if abs(j) >= 3600 * 10:
        return f"{j / 3600:.2f} Wh"
    if abs(j) >= 10000:
        return f"{j / 1000:.2f} kJ"
    return f"{j:.1f} J"


def timestamp(t: float | None) -> str:
    if t is None:
        return "N/A"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def num(x: float | None, fmt: str = ".3g", unit: str = "") -> str:
    if x is None:
        return "N/A"
    return f"{x:{fmt}}{(' ' + unit) if unit else ''}"
