"""How fast the work goes: throughput and latency percentiles, over the window a view asks for.

These are the figures every view used to compute its own way (the report's training line, the dashboard panels,
the exporter's running totals, the load summary): declared once here, each view shows the declaration's value
over its window and says which window that is.
"""

from __future__ import annotations

from typing import Any

from effmon.metrics.registry import NA, Inputs, metric

NO_STEPS = NA("no training steps in the window")
NO_REQUESTS = NA("no requests in the window")


def _value(v: float | None, reason: NA) -> float | NA:
    return reason if v is None else v


@metric(
    "tokens_per_s",
    label="tokens/s",
    unit="tokens/s",
    better="higher",
    needs=("training",),
    json=("throughput", "tokens_per_s"),
    family="throughput",
    fmt=",.0f",
    export="effmon_training_tokens_per_second",
)
def tokens_per_s(x: Inputs) -> float | NA:
    """Trained tokens (all ranks) / Σ optimizer-step time: the run's speed, pauses between steps left out."""
    return _value(x.training.tokens_per_s, NA("no step time")) if x.training else NO_STEPS


@metric(
    "samples_per_s",
    label="samples/s",
    unit="samples/s",
    better="higher",
    needs=("training",),
    json=("throughput", "samples_per_s"),
    family="throughput",
    fmt=",.1f",
    export="effmon_training_samples_per_second",
)
def samples_per_s(x: Inputs) -> float | NA:
    """Training samples (all ranks) / Σ optimizer-step time."""
    return _value(x.training.samples_per_s, NA("no step time")) if x.training else NO_STEPS


@metric(
    "steps_per_s",
    label="steps/s",
    unit="steps/s",
    better="higher",
    needs=("training",),
    json=("throughput", "steps_per_s"),
    family="throughput",
    fmt=".2f",
)
def steps_per_s(x: Inputs) -> float | NA:
    """Optimizer steps / Σ optimizer-step time (1 / AL for training)."""
    if not x.training:
        return NO_STEPS
    return x.training.steps / x.training.step_time_sum_s if x.training.step_time_sum_s else NA("no step time")


@metric(
    "generated_tokens_per_s",
    label="gen tokens/s",
    unit="tokens/s",
    better="higher",
    needs=("inference",),
    json=("throughput", "generated_tokens_per_s"),
    family="throughput",
    fmt=",.0f",
)
def generated_tokens_per_s(x: Inputs) -> float | NA:
    """Generated tokens / time with at least one request in flight (IT from the client's requests)."""
    if not x.inference:
        return NO_REQUESTS
    return _value(x.inference.generated_tokens_per_s, NA("tokens not counted (no usage or tokenizer)"))


@metric(
    "requests_per_s",
    label="requests/s",
    unit="requests/s",
    better="higher",
    needs=("inference",),
    json=("throughput", "requests_per_s"),
    family="throughput",
    fmt=".2f",
    export="effmon_serving_requests_per_second",
)
def requests_per_s(x: Inputs) -> float | NA:
    """Requests that succeeded / time with at least one request in flight."""
    return _value(x.inference.requests_per_s, NA("no time in flight")) if x.inference else NO_REQUESTS


def _steps_pct(x: Inputs, q: int) -> float | NA:
    if not x.training:
        return NO_STEPS
    return _value(x.training.step_time_p50_s if q == 50 else x.training.step_time_p95_s, NO_STEPS)


@metric(
    "step_p50",
    label="step p50",
    unit="s",
    better="lower",
    needs=("training",),
    json=("latency", "step_p50_s"),
    family="latency",
    fmt=".3f",
    export="effmon_training_step_p50_seconds",
)
def step_p50(x: Inputs) -> float | NA:
    """Median optimizer-step time (its slowest rank's)."""
    return _steps_pct(x, 50)


@metric(
    "step_p95",
    label="step p95",
    unit="s",
    better="lower",
    needs=("training",),
    json=("latency", "step_p95_s"),
    family="latency",
    fmt=".3f",
    export="effmon_training_step_p95_seconds",
)
def step_p95(x: Inputs) -> float | NA:
    """95th percentile of optimizer-step time."""
    return _steps_pct(x, 95)


def _request_pct(x: Inputs, field: str) -> float | NA:
    if not x.inference:
        return NO_REQUESTS
    return _value(getattr(x.inference, field), NA("no request measured it"))


def _percentile_of(field: str) -> Any:
    def compute(x: Inputs) -> float | NA:
        return _request_pct(x, field)

    return compute


REQUEST_PERCENTILES = (
    # key, label, the InferenceStats field, what it is, its Prometheus gauge (None: not exported)
    ("TTFT_p50", "TTFT p50", "ttft_p50_s", "Median time to the first generated text (client-side).",
     "effmon_serving_ttft_p50_seconds"),
    ("TTFT_p95", "TTFT p95", "ttft_p95_s", "95th percentile of the time to the first generated text.",
     "effmon_serving_ttft_p95_seconds"),
    ("TTFT_p99", "TTFT p99", "ttft_p99_s", "99th percentile of the time to the first generated text.", None),
    ("E2E_p50", "E2E p50", "latency_p50_s", "Median end-to-end request latency.", "effmon_serving_e2e_p50_seconds"),
    ("E2E_p95", "E2E p95", "latency_p95_s", "95th percentile of end-to-end request latency.",
     "effmon_serving_e2e_p95_seconds"),
    ("E2E_p99", "E2E p99", "latency_p99_s", "99th percentile of end-to-end request latency.", None),
)  # fmt: skip

for _key, _label, _field, _doc, _export in REQUEST_PERCENTILES:
    metric(_key, label=_label, unit="s", better="lower", needs=("inference",), description=_doc,
           json=("latency", _field.replace("latency", "e2e")), family="latency", fmt=".3g",
           export=_export)(_percentile_of(_field))  # fmt: skip
