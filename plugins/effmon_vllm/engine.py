"""vLLM as a serving engine for ``effmon serve`` presets (``engine = "vllm"``)."""

from __future__ import annotations

import shutil
from typing import Any

FLAGS = (
    ("dtype", "--dtype"),
    ("quantization", "--quantization"),
    ("kv_cache_dtype", "--kv-cache-dtype"),
    ("max_model_len", "--max-model-len"),
    ("gpu_memory_utilization", "--gpu-memory-utilization"),
    ("tensor_parallel_size", "--tensor-parallel-size"),
)

DIAGNOSES = (
    (
        ("CUDA out of memory", "OutOfMemoryError", "No available memory for the cache blocks", "not enough KV cache"),
        "the GPU has not enough memory for this model: lower --set gpu_memory_utilization "
        "or --set max_model_len, use a quantized preset, or a bigger GPU",
    ),
    (
        ("No CUDA GPUs are available", "Failed to infer device type", "NVIDIA driver"),
        "no usable NVIDIA GPU: vLLM serves on GPUs; on a CPU try: effmon serve tiny-cpu",
    ),
)


def command(fields: dict[str, Any], model_dir: str | None) -> list[str]:
    model = model_dir or str(fields["model"])
    argv = ["vllm", "serve", model, "--host", "127.0.0.1", "--port", str(fields.get("port", 8000))]
    for key, flag in FLAGS:
        value = fields.get(key)
        if value not in (None, ""):
            argv += [flag, str(value)]
    return argv + [str(a) for a in fields.get("extra_args", [])]


def available() -> bool:
    return shutil.which("vllm") is not None
