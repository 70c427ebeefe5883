"""vLLM integration: the server's Prometheus ``/metrics`` as an effmon source (``effmon attach --url``).

Registered through the same plugin hook as every source, with the role ``server_metrics``: the core asks
for that role (``effmon attach --url``, ``effmon serve`` of a vLLM preset), never for this plugin's name.
"""

from __future__ import annotations

from collections.abc import Callable

from effmon.core.declare import SERVING
from effmon.plugins import EngineSpec, Source, SourceOptions, SourceSpec, hookimpl


def _factory(options: SourceOptions) -> Source:
    from effmon_vllm.metrics import VllmMetricsSource

    return VllmMetricsSource(options)


@hookimpl
def effmon_register_sources(register: Callable[[SourceSpec], None]) -> None:
    register(
        SourceSpec(
            "vllm_metrics",
            "A vLLM server's Prometheus /metrics (effmon attach --url)",
            (SERVING,),
            _factory,
            live=False,
            role="server_metrics",
        )
    )


@hookimpl
def effmon_register_engines(register: Callable[[EngineSpec], None]) -> None:
    from effmon_vllm import engine

    register(
        EngineSpec(
            "vllm",
            "vLLM on NVIDIA GPUs (bf16/fp16, AWQ, GPTQ, FP8, bitsandbytes, fp8 KV cache)",
            engine.command,
            engine.available,
            "vLLM is not installed: pip install 'effmon[vllm]' (it serves on NVIDIA GPUs). "
            "On a CPU, try: effmon serve tiny-cpu",
            diagnoses=engine.DIAGNOSES,
            metrics=True,
        )
    )
