"""The built-in sources, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable

from effmon.core.declare import (
    BUSIEST,
    GPU,
    GPU_ENERGY,
    GPU_GPM,
    GPU_PROCESS,
    HOST,
    PHASE,
    REQUEST,
    TRAIN_STEP,
    WATCHED,
)
from effmon.core.source import Source, SourceOptions, SourceSpec, hookimpl


def _nvml(options: SourceOptions) -> Source:
    from effmon.sources.nvml import NvmlSource

    return NvmlSource(options)


def _host(options: SourceOptions) -> Source:
    from effmon.sources.host import HostSource

    return HostSource(options)


def _track(options: SourceOptions) -> Source:
    from effmon.sources.track import TrackSource

    return TrackSource(options)


def _dcgm(options: SourceOptions) -> Source:
    from effmon.sources.dcgm import DcgmSource

    return DcgmSource(options)


def _replay(options: SourceOptions) -> Source:
    from effmon.sources.replay import ReplaySource

    return ReplaySource(options)


@hookimpl
def effmon_register_sources(register: Callable[[SourceSpec], None]) -> None:
    register(
        SourceSpec("nvml", "NVIDIA GPUs through NVML (nvidia-ml-py)", (GPU, GPU_GPM, GPU_ENERGY, GPU_PROCESS), _nvml)
    )
    register(
        SourceSpec(
            "host",
            "This machine, the watched process trees and the busiest processes (psutil)",
            (HOST, WATCHED, BUSIEST),
            _host,
        )
    )
    register(
        SourceSpec(
            "track", "Training steps reported by instrumented processes (effmon.track)", (TRAIN_STEP, PHASE), _track
        )
    )
    register(
        SourceSpec(
            "dcgm",
            "A node's GPUs through its dcgm-exporter /metrics (effmon attach --dcgm URL)",
            (GPU, GPU_GPM, GPU_ENERGY),
            _dcgm,
            live=False,
        )
    )
    register(
        SourceSpec(
            "replay",
            "A recorded trace played back as the GPUs and steps of a fake machine",
            (GPU, GPU_GPM, GPU_ENERGY, TRAIN_STEP, REQUEST, PHASE),
            _replay,
            live=False,
        )
    )
