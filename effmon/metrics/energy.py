"""Energy and energy per unit of work.

Energy comes from the NVML energy counter where every GPU has one (its increase over the window,
interpolated between the rare reads), else from power integrated with the trapezoid rule; both are kept.
"""

from __future__ import annotations

from typing import Any

from effmon.core.fmt import human_energy
from effmon.metrics.registry import NA, Inputs, metric, per

COUNTER = "nvml_energy_counter"
INTEGRATED = "integrated_power"


@metric(
    "energy_j",
    label="energy",
    unit="J",
    better="lower",
    needs=("energy_counter_j", "energy_integrated_j", "gpus"),
    json=("AEC", "energy_j"),
    family="energy",
    fmt=human_energy,
    table="always",
    detail=lambda s: (
        f"counter {human_energy(s.value('energy_counter_j'))}, "
        f"integrated {human_energy(s.value('energy_integrated_j'))}"
    ),
    export="effmon_energy_joules",
)
def energy_j(x: Inputs) -> float | NA:
    """Energy over the window: the counter where every GPU has one, else integrated power."""
    counter = x["energy_counter_j"]
    return counter if counter is not None else (x["energy_integrated_j"] if x.gpus else NA("no GPU readings"))


@metric(
    "energy_counter_j",
    label="energy (counter)",
    unit="J",
    better="lower",
    needs=("gpus",),
    json=("AEC", "energy_counter_j"),
    family="energy",
    fmt=human_energy,
)
def energy_counter_j(x: Inputs) -> float | NA:
    """The NVML energy counter's increase over the window, summed over GPUs."""
    counters = [g.energy_counter_j for g in x.gpus]
    if not counters or any(c is None for c in counters):
        return NA("not every GPU has an energy counter reading in the window")
    return sum(c for c in counters if c is not None)


@metric(
    "energy_integrated_j",
    label="energy (integrated)",
    unit="J",
    better="lower",
    needs=("gpus",),
    json=("AEC", "energy_integrated_j"),
    family="energy",
    fmt=human_energy,
)
def energy_integrated_j(x: Inputs) -> float | NA:
    """Power integrated over the window (trapezoid), summed over GPUs."""
    return sum(g.energy_integrated_j for g in x.gpus) if x.gpus else NA("no GPU readings")


@metric(
    "energy_source",
    label="energy source",
    unit="",
    better=None,
    needs=("gpus",),
    json=("AEC", "energy_source"),
    family="energy",
    fmt=str,
)
def energy_source(x: Inputs) -> str:
    """Which figure ``energy`` is."""
    return COUNTER if x["energy_counter_j"] is not None else INTEGRATED


def _tokens(x: Inputs) -> Any:
    """The run's tokens: trained tokens for training, generated tokens for inference."""
    if x.run_kind == "training" and x.training:
        return x.training.tokens
    return x.inference.generated_tokens if x.inference else None


@metric(
    "J_per_token",
    label="J/token",
    unit="J",
    better="lower",
    needs=("energy_j", "training", "inference", "run_kind"),
    json=("energy_per", "token_j"),
    family="energy",
    table="known",
    parent="energy_j",
    detail="J",
    strip="{:.3g}",
    compare=True,
    export="effmon_energy_per_token_joules",
)
def j_per_token(x: Inputs) -> float | NA:
    """Energy per token: trained tokens (training) or generated tokens (inference)."""
    return per(x["energy_j"], _tokens(x), "no energy reading or no tokens")


@metric(
    "J_per_sample",
    label="J/sample",
    unit="J",
    better="lower",
    needs=("energy_j", "training"),
    json=("energy_per", "sample_j"),
    family="energy",
    table="known",
    parent="energy_j",
    detail="J",
    export="effmon_energy_per_sample_joules",
)
def j_per_sample(x: Inputs) -> float | NA:
    """Energy per training sample."""
    return per(x["energy_j"], x.training.samples if x.training else None, "no energy reading or no samples")


@metric(
    "J_per_request",
    label="J/request",
    unit="J",
    better="lower",
    needs=("energy_j", "inference"),
    json=("energy_per", "request_j"),
    family="energy",
    table="known",
    parent="energy_j",
    detail="J",
    strip="{:.3g}",
    compare=True,
    export="effmon_energy_per_request_joules",
)
def j_per_request(x: Inputs) -> float | NA:
    """Energy per inference request (all of the window's energy over its requests)."""
    return per(x["energy_j"], x.inference.requests if x.inference else None, "no energy reading or no requests")


@metric(
    "J_per_step",
    label="J/step",
    unit="J",
    better="lower",
    needs=("energy_j", "training"),
    json=("energy_per", "step_j"),
    family="energy",
    table="known",
    parent="energy_j",
    detail="J",
    strip="{:.3g}",
    compare=True,
    export="effmon_energy_per_step_joules",
)
def j_per_step(x: Inputs) -> float | NA:
    """Energy per optimizer step (all of the window's energy over its steps)."""
    return per(x["energy_j"], x.training.steps if x.training else None, "no energy reading or no training steps")


@metric(
    "J_per_generated_token",
    label="J/generated token (server)",
    unit="J",
    better="lower",
    needs=("energy_j", "server"),
    json=("energy_per", "generated_token_j"),
    family="energy",
    table="known",
    parent="energy_j",
    detail="J",
    strip="{:.3g}",
    export="effmon_energy_per_server_generated_token_joules",
)
def j_per_generated_token(x: Inputs) -> float | NA:
    """Energy per token the server says it generated (its own counter)."""
    tokens = x.server.generation_tokens if x.server else None
    return per(x["energy_j"], tokens, "no energy reading or no server token counter")


@metric(
    "tokens_per_J",
    label="tokens/J",
    unit="tokens/J",
    better="higher",
    needs=("energy_j", "training", "inference", "run_kind"),
    json=("efficiency", "tokens_per_j"),
    family="energy",
    table="known",
    parent="energy_j",
    detail="tokens per joule",
    strip="{:.3g}",
    compare=True,
    export="effmon_tokens_per_joule",
)
def tokens_per_j(x: Inputs) -> float | NA:
    """Tokens per joule, the inverse of J/token: trained tokens (training) or generated tokens (inference)."""
    energy, tokens = x["energy_j"], _tokens(x)
    if not energy or tokens is None:
        return NA("no energy reading or no tokens")
    return tokens / energy
