"""Plain formatting of numbers with units, shared by every view."""

from __future__ import annotations

import re
import time

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_KEEP_LINES = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def visible(text: object, keep_newlines: bool = False) -> str:
    """Control characters (escape sequences, bells, carriage returns ...) shown as ``\\xNN``: a string from a
    watched job or its command line can never move the cursor, recolour or hide text, or open a hyperlink."""
    pattern = _CONTROL_KEEP_LINES if keep_newlines else _CONTROL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


GIB = float(1 << 30)


def human_bytes(n: float | None) -> str:
    """Binary units everywhere (GiB, as AMU is): one memory unit across the dashboard, reports and exports."""
    if n is None:
        return "N/A"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} TiB"


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
