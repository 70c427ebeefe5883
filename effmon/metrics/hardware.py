"""How the GPUs ran: clock-event (throttle) time."""

from __future__ import annotations

from effmon.metrics.registry import NA, Inputs, metric


@metric(
    "throttle_s",
    label="throttled",
    unit="s",
    better="lower",
    needs=("gpus",),
    json=("throttle_s",),
    family="hardware",
    fmt=".1f",
    export="effmon_throttle_seconds",
)
def throttle_s(x: Inputs) -> float | NA:
    """Seconds any GPU's clocks were held down by power, thermal or hardware slowdown, summed over GPUs."""
    if not x.gpus or any(g.throttle_s is None for g in x.gpus):
        return NA("clock-event reasons were not recorded (replayed trace or unsupported GPU)")
    return sum(g.throttle_s for g in x.gpus if g.throttle_s is not None)
