"""Weight-only quantized copies of a model folder, with torchao through transformers (its TorchAoConfig), for the
quantized ``transformers serve`` presets (``tiny-cpu-int8``, ``tiny-cpu-int4``) and a user's model folder.

torchao is the PyTorch team's own quantization library and works on the CPU and the GPU; through transformers the
quantized folder is saved with its ``quantization_config`` in config.json, so ``transformers serve FOLDER`` (and
any ``from_pretrained``) loads it quantized with nothing else to say. The Linear layers are quantized per group of
``group_size`` weights (a scale and a zero point each), symmetric; embeddings and the output head are kept.
On the CPU torchao's IntxWeightOnly stores int4 values one per byte (``IntxUnpackedToInt8Tensor``): the values are
4-bit, the storage is that of int8. Built once, offline, next to the source folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BITS = {"int8": 8, "int4": 4}


class QuantizeError(Exception):
    """A quantized folder that cannot be made: said in one line (``effmon serve`` exits 2 with it)."""


def quiet_torchao() -> None:
    """torchao says on import which of its CUDA kernels it could not load, and torch warns about an enum it
    registers: neither is the user's business on a CPU; errors still show."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quantized_folder(source: Path, method: str, group_size: int = 32) -> Path:
    """``source`` quantized with ``method`` (int8 or int4), built once into ``source-method``."""
    if method not in BITS:
        raise QuantizeError(f"quantize = {method!r}: effmon quantizes to {', '.join(BITS)} (torchao, weight-only)")
    if not (source / "config.json").is_file():
        raise QuantizeError(f"model = {source}: not a local model folder (config.json); give one: --set model=PATH")
    out = source.with_name(f"{source.name}-{method}")
    if (out / "config.json").exists() and quantization_of(out):
        return out
    quiet_torchao()
    try:
        import torch
        from torchao.quantization import IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerGroup
        from transformers import AutoModelForCausalLM, AutoTokenizer, TorchAoConfig
    except ImportError as exc:
        raise QuantizeError(
            f"quantized presets need torchao ({exc.name} is missing): pip install 'effmon[quant]'"
        ) from None
    dtype = getattr(torch, method)  # torch.int8, torch.int4 (a sub-byte dtype torchao quantizes to)
    config = TorchAoConfig(IntxWeightOnlyConfig(weight_dtype=dtype, granularity=PerGroup(group_size)))
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, quantization_config=config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def quantization_of(folder: Path) -> dict[str, Any] | None:
    """What a model folder says of its quantization (config.json's quantization_config), or None."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    q = config.get("quantization_config")
    if not isinstance(q, dict):
        return None
    quant_type = q.get("quant_type") or {}
    default = quant_type.get("default", {}) if isinstance(quant_type, dict) else {}
    weight_dtype = str(default.get("_data", {}).get("weight_dtype", {}).get("_data", "")) if default else ""
    bits = 4 if "int4" in weight_dtype else 8 if "int8" in weight_dtype else None
    return {"method": q.get("quant_method"), "config": default.get("_type"), "weight_dtype": weight_dtype or None,
            "bits": bits}  # fmt: skip
