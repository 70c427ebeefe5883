"""Golden files take additions: what a report has that its golden file does not (a metric declared since, a new
field of a group) is taken out of the report before the byte-for-byte comparison; anything the golden file holds
must come out the same. So declaring a metric touches its declaration and nothing else, while a changed or lost
figure still fails."""

from __future__ import annotations

import json
import re
from typing import Any

ROW = re.compile(r"^│\s+(.+?)\s+│")


def _prune(got: Any, expected: Any) -> Any:
    """``got`` with the keys ``expected`` does not have taken out, recursively (lists element by element, and a
    list of metrics by their keys)."""
    if isinstance(got, dict) and isinstance(expected, dict):
        return {k: _prune(v, expected[k]) for k, v in got.items() if k in expected}
    if isinstance(got, list) and isinstance(expected, list):
        if got and all(isinstance(x, dict) and "key" in x for x in got + expected):
            by_key = {x["key"]: x for x in expected}
            return [_prune(x, by_key[x["key"]]) for x in got if x["key"] in by_key]
        if len(got) == len(expected):
            return [_prune(a, b) for a, b in zip(got, expected, strict=True)]
    return got


def _table_rows(text: str) -> set[str]:
    return {m.group(1).strip() for line in text.splitlines() if (m := ROW.match(line))}


def without_additions(name: str, got: str, expected: str) -> str:
    """The report as the golden file would show it, were the additions not there (see the module's docstring)."""
    if name.endswith(".csv"):
        return got
    if name.endswith(".txt"):
        known = _table_rows(expected)
        kept = [line for line in got.splitlines(keepends=True) if not (m := ROW.match(line)) or m.group(1).strip()
                in known]  # fmt: skip
        return "".join(kept)
    pruned = _prune(json.loads(got), json.loads(expected))
    if name == "compare.json":
        return json.dumps(pruned, indent=2) + "\n"
    return json.dumps(pruned, allow_nan=False) + "\n"
