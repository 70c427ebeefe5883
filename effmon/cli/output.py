"""Output people can script and read: ``--json``, one tab-separated row per line when standard output is not a
terminal (as ``gh`` and ``docker ps --format`` do), tables whose names are never cut, and every string from a
user or a watched job shown literally (no Rich markup, no terminal control sequences)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from effmon.core.fmt import csv_text, visible


def piped() -> bool:
    return not sys.stdout.isatty()


def print_json(obj: Any) -> int:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    return 0


def print_rows(rows: Iterable[Sequence[Any]]) -> int:
    """One row per line, fields separated by tabs, full values, nothing else (text that would start a spreadsheet
    formula gets a leading ')."""
    for row in rows:
        sys.stdout.write("\t".join("" if v is None else csv_text(v) if isinstance(v, str) else visible(v) for v in row))
        sys.stdout.write("\n")
    return 0


def literal(value: Any, style: str = "") -> Any:
    """A cell or line that shows ``value`` exactly: Rich markup is not parsed, control characters are visible."""
    from rich.text import Text

    return Text(visible("" if value is None else value), style=style)


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False)
