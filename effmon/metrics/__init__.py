"""Metrics of a session: the registry (one declaration per metric) and ``evaluate``.

Reading order for a newcomer: ``registry`` (what a metric declaration is), one family module
(``efficientllm``, ``energy``, ``compression``, ``hardware``), ``stats`` (the typed inputs),
``aggregate`` (exact and incremental reductions of the stored series), ``summary`` (``evaluate``).

Plugins declare metrics too, through the ``effmon_register_metrics`` hook (``effmon.plugins``): they are added
after effmon's own, checked by the same contract, and shown by every view as effmon's are.
"""

import importlib
from typing import Any

from effmon.metrics.aggregate import Aggregation, ExactAggregation, IncrementalAggregation
from effmon.metrics.registry import (
    METRICS,
    NA,
    MetricDef,
    Options,
    RegistryError,
    Result,
    check_needs,
    declare,
    remove,
)
from effmon.metrics.summary import Summary, evaluate
from effmon.metrics.window import MetricsError, Window, resolve_window, so_far

MODULES = ("efficientllm", "energy", "compression", "hardware", "speed", "diagnosis")
"""The modules that declare effmon's own metrics, imported in this order: the order tables show them."""

for _module in MODULES:
    importlib.import_module(f"effmon.metrics.{_module}")
check_needs()

from effmon.metrics.compression import mcr, precision_bits  # noqa: E402  (after the families are declared)

PLUGIN_ERRORS: list[str] = []
"""Plugins whose metrics could not be added, and why (``effmon sources`` shows them)."""


def add_plugin(plugin: Any, name: str | None = None) -> list[str]:
    """Add a plugin's metrics (its ``effmon_register_metrics`` hook); returns their keys. A plugin whose hook fails
    or whose declarations break the registry's contract is reported in ``PLUGIN_ERRORS`` with none of its metrics
    added: a broken plugin never stops effmon."""
    hook = getattr(plugin, "effmon_register_metrics", None)
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    if hook is None:
        return []
    added: list[str] = []

    def register(key: str, compute: Any, **declaration: Any) -> None:
        declare(key, compute, module=f"plugin {name}", **declaration)
        added.append(key)

    try:
        hook(register=register)
        check_needs()
    except Exception as exc:
        remove(added)
        PLUGIN_ERRORS.append(f"plugin {name!r}: its metrics were not added: {type(exc).__name__}: {exc}")
        return []
    return added


def remove_plugin(keys: list[str]) -> None:
    """Take a plugin's metrics out again (tests; a notebook reloading its plugin)."""
    remove(keys)


def _load_entry_point_plugins() -> None:
    from effmon.plugins import entry_point_plugins

    plugins, errors = entry_point_plugins()
    PLUGIN_ERRORS.extend(errors)
    for name, plugin in plugins:
        add_plugin(plugin, name)


_load_entry_point_plugins()

__all__ = [
    "METRICS",
    "MODULES",
    "NA",
    "PLUGIN_ERRORS",
    "Aggregation",
    "ExactAggregation",
    "IncrementalAggregation",
    "MetricDef",
    "MetricsError",
    "Options",
    "RegistryError",
    "Result",
    "Summary",
    "Window",
    "add_plugin",
    "evaluate",
    "mcr",
    "precision_bits",
    "remove_plugin",
    "resolve_window",
    "so_far",
]
