"""Model compression rate (MCR) and model FLOP utilisation (MFU).

MCR = (bits_original / bits_compressed) × (perf_compressed / perf_original)
MFU = 6·N·tokens/s (training) or 2·N·generated tokens/s (inference) over the GPUs' dense bf16 peak
"""

from __future__ import annotations

import math
from typing import Any

from effmon.metrics.registry import NA, Inputs, Known, metric
from effmon.metrics.window import MetricsError

# Dense bf16 tensor peak (FLOP/s) by GPU name, for the MFU estimate.
PEAK_BF16_FLOPS = (
    ("H200", 989.4e12),
    ("H100 80GB HBM3", 989.4e12),
    ("H100 SXM", 989.4e12),
    ("H100 NVL", 835.5e12),
    ("H100 PCIe", 756.0e12),
    ("H100", 756.0e12),
    ("GH200", 989.4e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362.05e12),
    ("A10G", 70e12),
    ("L4", 121e12),
)

PRECISION_BITS = {
    "fp32": 32,
    "float32": 32,
    "tf32": 32,
    "bf16": 16,
    "bfloat16": 16,
    "fp16": 16,
    "float16": 16,
    "half": 16,
    "fp8": 8,
    "fp8_e4m3": 8,
    "fp8_e5m2": 8,
    "int8": 8,
    "w8a8": 8,
    "bnb-8bit": 8,
    "llm.int8": 8,
    "int4": 4,
    "awq": 4,
    "gptq": 4,
    "nf4": 4,
    "fp4": 4,
    "nvfp4": 4,
    "mxfp4": 4,
    "bnb-4bit": 4,
    "bitsandbytes": 4,
    "w4a16": 4,
    "int3": 3,
    "int2": 2,
}

MCR_FORMULA = "(bits_original / bits_compressed) * (perf_compressed / perf_original)"


def precision_bits(name: str) -> int:
    key = name.strip().lower().replace(" ", "")
    if key not in PRECISION_BITS:
        raise MetricsError(f"unknown precision {name!r}; known: {', '.join(sorted(PRECISION_BITS))}")
    return PRECISION_BITS[key]


def mcr(bits_original: int, bits_compressed: int, perf_original: float, perf_compressed: float) -> float:
    for label, value in (("baseline performance", perf_original), ("performance", perf_compressed)):
        if not math.isfinite(value) or value < 0:
            raise MetricsError(f"{label} must be a non-negative score, got {value}")
    if perf_original == 0:
        raise MetricsError("baseline performance is 0; MCR would divide by zero")
    return (bits_original / bits_compressed) * (perf_compressed / perf_original)


def _mcr_detail(s: Any) -> str:
    r = s.result("MCR")
    return r.reason or f"{r.info.get('baseline_precision')} → {r.info.get('precision')}"


@metric(
    "MCR",
    label="MCR",
    unit="",
    better="higher",
    needs=("options", "meta"),
    json=("MCR", "value"),
    json_object=True,
    efficientllm="MCR",
    unit_doc="dimensionless",
    fmt=".4f",
    table="always",
    detail=_mcr_detail,
    compare=True,
    export="effmon_mcr_ratio",
)
def model_compression_rate(x: Inputs) -> Any:
    """(bits_original / bits_compressed) × (perf_compressed / perf_original), from the scores given."""
    o = x.options
    if o.perf is None and o.baseline_perf is None:
        return NA("no performance scores given (--perf and --baseline-perf)")
    if o.perf is None or o.baseline_perf is None:
        raise MetricsError("MCR needs both --perf (this run) and --baseline-perf (the baseline)")
    precision = o.precision or x.meta.get("precision")
    if not precision:
        raise MetricsError("MCR needs this run's precision: give --precision (e.g. int4)")
    base = o.baseline_precision or "bf16"
    value = mcr(precision_bits(base), precision_bits(precision), o.baseline_perf, o.perf)
    return Known(
        value,
        {
            "precision": precision,
            "bits": precision_bits(precision),
            "baseline_precision": base,
            "baseline_bits": precision_bits(base),
            "perf": o.perf,
            "baseline_perf": o.baseline_perf,
            "formula": MCR_FORMULA,
        },
    )


def peak_flops(gpu_name: str | None) -> float | None:
    if not gpu_name:
        return None
    for key, flops in PEAK_BF16_FLOPS:
        if key in gpu_name:
            return flops
    return None


@metric(
    "MFU",
    label="MFU",
    unit="ratio",
    better="higher",
    needs=("gpus", "model", "training", "IT", "run_kind"),
    json=("MFU", "value"),
    json_object=True,
    family="compute",
    fmt=".3f",
    table="known",
    detail=lambda s: s.result("MFU").info.get("formula", ""),
    export="effmon_mfu_ratio",
)
def mfu(x: Inputs) -> Any:
    """Model FLOP utilisation against the GPUs' dense bf16 peak."""
    params = x.model.get("params")
    name = x.gpus[0].name if x.gpus else None
    peak = peak_flops(name)
    if x.run_kind == "training" and x.training and params and x.training.tokens_per_s:
        flops, formula = 6 * params * x.training.tokens_per_s, "6 * params * tokens_per_s"
    elif x.run_kind == "inference" and x.inference and params and x["IT"]:
        flops, formula = 2 * params * x["IT"], "2 * params * generated_tokens_per_s"
    else:
        return NA("needs the parameter count and token throughput")
    if not peak:
        return NA(f"peak FLOP/s of {name!r} unknown")
    return Known(
        flops / (peak * len(x.gpus)),
        {"formula": f"{formula} / (peak_bf16_dense_flops * gpus)", "peak_flops_per_gpu": peak},
    )
