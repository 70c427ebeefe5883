"""What a metric function returns besides a plain number: ``NA(reason)`` (no value, and why) or ``Known(value,
info)`` (a value with facts exported beside it). Here in the core so that a plugin declaring a metric through
``effmon.plugins`` uses the same two types as the built-in declarations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class NA:
    """No value, and why (never a zero)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"NA({self.reason!r})"


@dataclass(frozen=True)
class Known:
    """A value with facts about how it was obtained (exported beside it, e.g. MCR's bit widths)."""

    value: Any
    info: dict[str, Any] = field(default_factory=dict)
