"""vLLM integration: the server's Prometheus ``/metrics`` as an effmon source (``effmon attach --url``).

Registered through the same plugin hook as every source. Serving presets and ``effmon serve`` will live
here too.
"""

from __future__ import annotations

from collections.abc import Callable

from effmon.declare import SERVING
from effmon.plugins import Source, SourceOptions, SourceSpec, hookimpl


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
        )
    )
