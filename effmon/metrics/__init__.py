"""EfficientLLM metrics and friends: pure functions over a session."""

from effmon.metrics.engine import MetricsError, Window, compute, resolve_window
from effmon.metrics.series import integrate, time_average

__all__ = ["MetricsError", "Window", "compute", "resolve_window", "integrate", "time_average"]
