"""Metrics of a session: the registry (one declaration per metric) and ``evaluate``.

Reading order for a newcomer: ``registry`` (what a metric declaration is), one family module
(``efficientllm``, ``energy``, ``compression``, ``hardware``), ``stats`` (the typed inputs),
``aggregate`` (exact and incremental reductions of the stored series), ``summary`` (``evaluate``).
"""

from effmon.metrics import compression, efficientllm, energy, hardware  # noqa: F401  (each declares its metrics)
from effmon.metrics.aggregate import Aggregation, ExactAggregation, IncrementalAggregation
from effmon.metrics.compression import mcr, precision_bits
from effmon.metrics.registry import METRICS, NA, MetricDef, Options, Result, check
from effmon.metrics.summary import Summary, evaluate
from effmon.metrics.window import MetricsError, Window, resolve_window, so_far

FAMILIES = ("efficientllm", "energy", "compression", "hardware")
"""Metric families, in the order tables show them."""

check(FAMILIES)

__all__ = [
    "FAMILIES",
    "METRICS",
    "NA",
    "Aggregation",
    "ExactAggregation",
    "IncrementalAggregation",
    "MetricDef",
    "MetricsError",
    "Options",
    "Result",
    "Summary",
    "Window",
    "evaluate",
    "mcr",
    "precision_bits",
    "resolve_window",
    "so_far",
]
