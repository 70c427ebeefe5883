"""Plain formatting of numbers with units, shared by every view."""

from __future__ import annotations

import re
import time

_INVISIBLE = "\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff"  # zero-width and bidirectional controls
_CONTROL = re.compile(rf"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]")
_CONTROL_KEEP_LINES = re.compile(rf"[\x00-\x09\x0b-\x1f\x7f-\x9f{_INVISIBLE}]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _show(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object, keep_newlines: bool = False) -> str:
    """Control characters (escape sequences, bells, carriage returns ...) shown as ``\\xNN``, and zero-width or
    bidirectional marks as ``\\uNNNN``: a string from a watched job or its command line can never move the
    cursor, recolour or hide text, reorder what is shown, or open a hyperlink."""
    pattern = _CONTROL_KEEP_LINES if keep_newlines else _CONTROL
    return pattern.sub(_show, str(text))


def md_text(text: object) -> str:
    """A string from a session as literal Markdown text (a table cell, a list item): no HTML, no links, no
    emphasis, no cell breaks, control characters visible."""
    out = visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", out)


def html_text(text: object) -> str:
    """A string from a session as literal HTML text, control characters visible."""
    import html

    return html.escape(visible(text), quote=True)


def csv_text(text: object) -> str:
    """A text cell for a spreadsheet: one that starts like a formula (``=``, ``+``, ``-``, ``@``) gets a leading
    apostrophe, so no spreadsheet evaluates it. Numbers (``-1.5``) and a lone ``-`` are left alone."""
    s = visible(text)
    if len(s) < 2 or s[0] not in "=+-@":
        return s
    try:
        float(s)
    except ValueError:
        return "'" + s
    return s


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


def short_command(argv: list[str]) -> str:
    """A command as people recognise it in a narrow table: programs and scripts without their folders, arguments
    as given. ``/venv/bin/python3.11 /home/me/train.py --lr 1e-4`` is ``python3.11 train.py --lr 1e-4``."""
    if not argv:
        return ""
    out = [argv[0].rsplit("/", 1)[-1]]
    for arg in argv[1:]:
        script = arg.endswith((".py", ".sh")) and not arg.startswith("-")
        out.append(arg.rsplit("/", 1)[-1] if script else arg)
    return " ".join(out)
