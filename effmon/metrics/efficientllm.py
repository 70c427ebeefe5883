"""The EfficientLLM benchmark's metrics (see docs/metrics.md):

AMU  (1/T)∫ memory_used dt, summed over GPUs, in GiB (2^30 bytes; the reference code's "GB")
PCU  (1/T)∫ SM activity dt (NVML GPM) where available, else NVML utilisation; mean over GPUs
AL   mean step wall time (training) or mean end-to-end request latency (inference)
TT   Σ tokens / params / Σ step time;  ST  Σ samples / params / Σ step time
IT   Σ generated tokens / time with at least one request in flight
AEC  (1/T)∫ P dt summed over GPUs, in W
"""

from __future__ import annotations

from typing import Any

from effmon.core.fmt import num
from effmon.metrics.registry import NA, Inputs, metric
from effmon.metrics.stats import GIB, PCU_FROM_GPM

NO_GPU = NA("no GPU readings in the window")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _amu_bytes(x: Inputs) -> float:
    return sum(g.mem_used_avg_bytes or 0 for g in x.gpus)


@metric(
    "AMU",
    label="AMU",
    unit="GiB",
    better="lower",
    needs=("gpus",),
    json=("AMU", "gib"),
    efficientllm="AMU",
    unit_doc="GiB (2^30 bytes; the reference code's 'GB'), summed over GPUs",
    fmt=".2f",
    table="always",
    detail=lambda s: f"GiB, summed over GPUs ({num((s.value('AMU_fraction') or 0) * 100, '.1f')}% of total)",
    strip="{:.1f} GiB",
    compare=True,
)
def amu(x: Inputs) -> float | NA:
    """Average memory in use, time-weighted, summed over GPUs (every process, the caching allocator included)."""
    return _amu_bytes(x) / GIB if x.gpus else NO_GPU


@metric("AMU_fraction", label="AMU share", unit="ratio", better="lower", needs=("gpus",), json=("AMU", "fraction"))
def amu_fraction(x: Inputs) -> float | NA:
    """AMU as a share of the GPUs' total memory."""
    total = sum(g.mem_total_bytes or 0 for g in x.gpus)
    return _amu_bytes(x) / total if total else NA("total GPU memory unknown")


@metric(
    "AMU_bytes",
    label="AMU bytes",
    unit="B",
    better="lower",
    needs=("gpus",),
    json=("AMU", "bytes"),
    export="effmon_amu_bytes",
)
def amu_bytes(x: Inputs) -> float | NA:
    """AMU in bytes."""
    return _amu_bytes(x) if x.gpus else NO_GPU


def _pcu_strip(value: Any, s: Any) -> str:
    return f"{value:.2f}" + (" SM" if s.value("PCU_source") == PCU_FROM_GPM else " util")


@metric(
    "PCU",
    label="PCU",
    unit="ratio",
    better="higher",
    needs=("gpus",),
    json=("PCU", "value"),
    efficientllm="PCU",
    unit_doc="ratio 0-1, time-averaged, mean over GPUs",
    fmt=".3f",
    table="always",
    detail=lambda s: f"ratio, from {s.value('PCU_source')}",
    strip=_pcu_strip,
    compare=True,
    export="effmon_pcu_ratio",
)
def pcu(x: Inputs) -> float | NA:
    """Time-averaged SM activity (NVML GPM) where the GPU has it, else NVML utilisation; mean over GPUs."""
    value = _mean([g.pcu for g in x.gpus if g.pcu is not None])
    return NO_GPU if value is None else value


@metric("PCU_source", label="PCU source", unit="", better=None, needs=("gpus",), json=("PCU", "source"), fmt=str)
def pcu_source(x: Inputs) -> Any:
    """Which reading PCU comes from: NVML GPM SM activity or NVML utilisation (a list if GPUs differ)."""
    sources = sorted({g.pcu_source for g in x.gpus if g.pcu_source})
    if not sources:
        return NO_GPU
    return sources[0] if len(sources) == 1 else sources


@metric(
    "tensor_active",
    label="tensor active",
    unit="ratio",
    better="higher",
    needs=("gpus",),
    json=("PCU", "tensor_active"),
    family="compute",
    fmt=".3f",
    table="known",
    parent="PCU",
    detail="ratio, NVML GPM",
    export="effmon_tensor_active_ratio",
)
def tensor_active(x: Inputs) -> float | NA:
    """Time-averaged tensor-core activity (NVML GPM), mean over GPUs."""
    tensor = [g.tensor_active_avg_pct for g in x.gpus if g.tensor_active_avg_pct is not None]
    return sum(tensor) / len(tensor) / 100.0 if tensor else NA("no NVML GPM readings (Hopper or newer)")


@metric(
    "nvml_utilization",
    label="NVML util",
    unit="ratio",
    better="higher",
    needs=("gpus",),
    json=("PCU", "nvml_utilization"),
    family="compute",
    fmt=".3f",
    table="known",
    parent="PCU",
    detail="ratio (any kernel running — not SM activity)",
)
def nvml_utilization(x: Inputs) -> float | NA:
    """NVML utilisation: the share of time any kernel ran (not how busy the SMs were)."""
    value = _mean([g.util_gpu_avg_pct / 100.0 for g in x.gpus if g.util_gpu_avg_pct is not None])
    return NO_GPU if value is None else value


def _al_unit(s: Any) -> str:
    return "s/step" if s.run_kind == "training" else "s/request"


@metric(
    "AL",
    label="AL",
    unit="s",
    better="lower",
    needs=("run_kind", "training", "inference"),
    json=("AL", "value"),
    efficientllm="AL",
    unit_doc="s per training step, or s per request (end-to-end)",
    table="always",
    detail=_al_unit,
    strip="{:.3g} s",
    compare=True,
    export="effmon_al_seconds",
)
def al(x: Inputs) -> float | NA:
    """Average latency: mean step wall time (training) or mean end-to-end request latency (inference)."""
    if x.run_kind == "training":
        return x["AL_training"] if x.training else NA("no training steps")
    if x.run_kind == "inference":
        return x["AL_inference"] if x.inference else NA("no requests")
    return NA("no training steps or requests in the window")


@metric(
    "AL_training",
    label="AL (training)",
    unit="s",
    better="lower",
    needs=("training",),
    json=("AL", "training_s_per_step"),
)
def al_training(x: Inputs) -> float | NA:
    """Mean step wall time."""
    return x.training.step_time_mean_s if x.training else NA("no training steps")


@metric(
    "AL_inference",
    label="AL (inference)",
    unit="s",
    better="lower",
    needs=("inference",),
    json=("AL", "inference_s_per_request"),
)
def al_inference(x: Inputs) -> float | NA:
    """Mean end-to-end request latency."""
    if not x.inference or x.inference.latency_mean_s is None:
        return NA("no requests")
    return x.inference.latency_mean_s


def _per_param(x: Inputs, total: float) -> float | NA:
    params = x.model.get("params")
    if not params:
        x.note("TT and ST are null: the model's parameter count is unknown (give --params N)")
        return NA("the model's parameter count is unknown (give --params N)")
    assert x.training is not None
    time_s = x.training.step_time_sum_s
    return total / params / time_s if time_s else NA("no step time")


@metric(
    "TT",
    label="TT",
    unit="tokens/param/s",
    better="higher",
    needs=("training", "model"),
    json=("TT",),
    efficientllm="TT",
    unit_doc="tokens / parameter / s",
    table="known",
    detail="tokens/param/s",
    strip="{:.3g}",
    compare=True,
    export="effmon_tt_tokens_per_param_per_second",
)
def tt(x: Inputs) -> float | NA:
    """Token throughput: Σ tokens / parameters / Σ step time."""
    return _per_param(x, x.training.tokens) if x.training else NA("no training steps")


@metric(
    "ST",
    label="ST",
    unit="samples/param/s",
    better="higher",
    needs=("training", "model"),
    json=("ST",),
    efficientllm="ST",
    unit_doc="samples / parameter / s",
    table="known",
    detail="samples/param/s",
    strip="{:.3g}",
    compare=True,
    export="effmon_st_samples_per_param_per_second",
)
def st(x: Inputs) -> float | NA:
    """Sample throughput: Σ samples / parameters / Σ step time."""
    return _per_param(x, x.training.samples) if x.training else NA("no training steps")


@metric(
    "IT",
    label="IT",
    unit="tokens/s",
    better="higher",
    needs=("inference", "server"),
    json=("IT",),
    efficientllm="IT",
    unit_doc="generated tokens / s",
    table="known",
    detail="generated tokens/s",
    strip="{:.3g}",
    compare=True,
    export="effmon_it_tokens_per_second",
)
def it(x: Inputs) -> float | NA:
    """Inference throughput: generated tokens / time with at least one request in flight."""
    if x.inference and x.inference.generated_tokens_per_s is not None:
        return x.inference.generated_tokens_per_s
    if x.server and x.server.generation_tokens_per_s is not None:  # watched through /metrics only
        x.note("IT from the server's generation-token counter (effmon attach --url), not client requests")
        return x.server.generation_tokens_per_s
    return NA("no requests")


@metric(
    "AEC",
    label="AEC",
    unit="W",
    better="lower",
    needs=("gpus",),
    json=("AEC", "watts"),
    efficientllm="AEC",
    unit_doc="W (average power, summed over GPUs)",
    fmt=".1f",
    table="always",
    detail="W (average power, all GPUs)",
    strip="{:.0f} W",
    compare=True,
    export="effmon_aec_watts",
)
def aec(x: Inputs) -> float | NA:
    """Average power, (1/T)∫P dt, summed over GPUs."""
    return sum(g.power_avg_w or 0 for g in x.gpus) if x.gpus else NO_GPU
