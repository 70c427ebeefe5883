"""Declarations every downstream consumer reads: entities and their metrics.

A source declares what it measures once (name, unit, kind, description); the store
builds its tables from these declarations, and tables, plots, exports and
``effmon sources`` read them back. A reading a device does not support is stored as
NULL and shown as N/A, never as zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MetricKind = Literal["gauge", "counter", "info", "duration", "count"]


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    kind: MetricKind
    description: str
    sql_type: Literal["REAL", "INTEGER", "TEXT"] = "REAL"


@dataclass(frozen=True)
class Entity:
    """A kind of row: one wide row per entity per reading.

    ``keys`` identify the instance (``gpu`` for a GPU, ``gpu, pid`` for a GPU process).
    A *span* entity has ``t_start``/``t_end`` (a training step, a request, a phase);
    any other has one time stamp ``t``.
    """

    name: str
    keys: tuple[str, ...]
    metrics: tuple[Metric, ...]
    description: str
    span: bool = False
    key_types: tuple[str, ...] = field(default=())

    @property
    def time_columns(self) -> tuple[str, ...]:
        return ("t_start", "t_end") if self.span else ("t",)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.time_columns + self.keys + tuple(m.name for m in self.metrics)

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"{self.name} has no metric {name!r}")


@dataclass
class Row:
    """One reading of one entity instance: ``values`` holds keys, times and metrics."""

    entity: str
    values: dict[str, Any]


def M(name: str, unit: str, kind: MetricKind, description: str, sql_type: str = "REAL") -> Metric:
    return Metric(name, unit, kind, description, sql_type)  # type: ignore[arg-type]


# Entities the core itself defines: every source that reads a GPU fills these, so
# metrics and views never depend on which source (NVML, a replay) produced a row.
GPU = Entity(
    "gpu",
    keys=("gpu",),
    key_types=("INTEGER",),
    description="Cheap per-GPU gauges, read every tick",
    metrics=(
        M("mem_used_bytes", "B", "gauge", "Device memory in use (all processes)", "INTEGER"),
        M("mem_total_bytes", "B", "gauge", "Device memory total", "INTEGER"),
        M("util_gpu_pct", "%", "gauge", "NVML utilisation: share of time any kernel ran (not SM activity)"),
        M("util_mem_pct", "%", "gauge", "NVML utilisation: share of time memory was read or written"),
        M("power_w", "W", "gauge", "Board power draw (nvmlDeviceGetPowerUsage)"),
        M("power_limit_w", "W", "gauge", "Enforced power limit"),
        M("sm_clock_mhz", "MHz", "gauge", "SM clock"),
        M("mem_clock_mhz", "MHz", "gauge", "Memory clock"),
        M("temp_c", "°C", "gauge", "GPU temperature"),
        M("clock_event_reasons", "bitmask", "info", "NVML clock-event (throttle) reasons", "INTEGER"),
    ),
)

GPU_GPM = Entity(
    "gpu_gpm",
    keys=("gpu",),
    key_types=("INTEGER",),
    description="NVML GPM (Hopper and newer): activity over the interval between two GPM samples",
    metrics=(
        M("sm_active_pct", "%", "gauge", "GPM SM activity: share of SMs busy, time-averaged"),
        M("sm_occupancy_pct", "%", "gauge", "GPM SM occupancy: resident warps vs the maximum"),
        M("tensor_active_pct", "%", "gauge", "GPM tensor-core activity (any tensor op)"),
        M("dram_bw_pct", "%", "gauge", "GPM DRAM bandwidth used vs the peak"),
        M("pcie_tx_bytes_s", "B/s", "gauge", "GPM PCIe traffic from the GPU"),
        M("pcie_rx_bytes_s", "B/s", "gauge", "GPM PCIe traffic to the GPU"),
    ),
)

GPU_COLUMNS: tuple[str, ...] = tuple(m.name for m in GPU.metrics)
GPM_ACTIVITY: tuple[str, ...] = ("sm_active_pct", "sm_occupancy_pct", "tensor_active_pct", "dram_bw_pct")
"""The GPM gauges given as percentages (the metrics engine averages these)."""

GPU_ENERGY = Entity(
    "gpu_energy",
    keys=("gpu",),
    key_types=("INTEGER",),
    description="Energy, read rarely: the hardware counter and power integrated since the session began",
    metrics=(
        M("energy_counter_j", "J", "counter", "NVML total-energy counter (since driver load)"),
        M("energy_integrated_j", "J", "counter", "Power integrated (trapezoid) since the session began"),
        M("energy_counter_delta_j", "J", "counter", "Counter minus its first reading in this session"),
    ),
)

GPU_PROCESS = Entity(
    "gpu_process",
    keys=("gpu", "pid"),
    key_types=("INTEGER", "INTEGER"),
    description="Processes on each GPU, read at most once a second",
    metrics=(
        M("used_mem_bytes", "B", "gauge", "GPU memory used by the process", "INTEGER"),
        M("sm_util_pct", "%", "gauge", "Process SM utilisation (NVML process-utilisation samples)"),
        M("mem_util_pct", "%", "gauge", "Process memory-bandwidth utilisation"),
    ),
)

HOST = Entity(
    "host",
    keys=(),
    description="This machine",
    metrics=(
        M("cpu_pct", "%", "gauge", "All CPUs, 100% = every core busy"),
        M("mem_used_bytes", "B", "gauge", "Memory in use", "INTEGER"),
        M("mem_total_bytes", "B", "gauge", "Memory total", "INTEGER"),
    ),
)

WATCHED = Entity(
    "watched",
    keys=("pid",),
    key_types=("INTEGER",),
    description="A watched process with its children, summed",
    metrics=(
        M("cpu_pct", "%", "gauge", "CPU of the process tree, 100% = one core"),
        M("rss_bytes", "B", "gauge", "Resident memory of the process tree", "INTEGER"),
        M("threads", "", "gauge", "Threads in the process tree", "INTEGER"),
        M("nprocs", "", "gauge", "Processes in the tree", "INTEGER"),
        M("io_read_bytes", "B", "counter", "Bytes read by the tree (live processes)", "INTEGER"),
        M("io_write_bytes", "B", "counter", "Bytes written by the tree (live processes)", "INTEGER"),
    ),
)

BUSIEST = Entity(
    "busiest",
    keys=("pid",),
    key_types=("INTEGER",),
    description="The busiest processes of this machine by CPU (effmon top), read at the host interval",
    metrics=(
        M("cpu_pct", "%", "gauge", "CPU of the process, 100% = one core"),
        M("rss_bytes", "B", "gauge", "Resident memory of the process", "INTEGER"),
        M("name", "", "info", "Process name", "TEXT"),
    ),
)

TRAIN_STEP = Entity(
    "train_step",
    keys=("rank",),
    key_types=("INTEGER",),
    span=True,
    description="One optimiser step of a training run",
    metrics=(
        M("step", "", "count", "Global step number", "INTEGER"),
        M("tokens", "tokens", "count", "Input tokens in the step on this rank, padding not counted", "INTEGER"),
        M("padded_tokens", "tokens", "count", "Input positions in the step on this rank, padding included", "INTEGER"),
        M("samples", "samples", "count", "Samples in the step on this rank (counted from its batches)", "INTEGER"),
        M("loss", "", "gauge", "Training loss"),
        M("lr", "", "gauge", "Learning rate"),
        M("grad_norm", "", "gauge", "Gradient norm"),
        M("epoch", "", "gauge", "Epoch (fractional)"),
        M(
            "comm_s",
            "s",
            "duration",
            "Exposed communication: time the step waited for gradient sync beyond its computation, when measured",
        ),
        M("comm_busy_s", "s", "duration", "Gradient all-reduce busy time (mostly overlapped with backward)"),
        M("phase", "", "info", "Phase label", "TEXT"),
    ),
)

REQUEST = Entity(
    "request",
    keys=(),
    span=True,
    description="Inference requests, one row per request or per batch of identical requests",
    metrics=(
        M("requests", "requests", "count", "Requests this row stands for", "INTEGER"),
        M("prompt_tokens", "tokens", "count", "Prompt tokens per request", "INTEGER"),
        M(
            "generated_tokens",
            "tokens",
            "count",
            "Generated tokens per request; NULL when they were not counted (chunks are not tokens)",
            "INTEGER",
        ),
        M("tokens_from", "", "info", "How the tokens were counted: usage, tokenizer or server (/tokenize)", "TEXT"),
        M("ttft_s", "s", "duration", "Time to the first chunk carrying generated text (not the role chunk)"),
        M("tpot_s", "s", "duration", "Time per output token after the first: (E2E - TTFT) / (tokens - 1)"),
        M("itl_mean_s", "s", "duration", "Mean gap between content chunks (per chunk, not per token)"),
        M("itl_token_mean_s", "s", "duration", "Mean inter-token latency per token (tokens per chunk known)"),
        M("chunks", "", "count", "Content chunks streamed", "INTEGER"),
        M(
            "error",
            "",
            "info",
            "Why the request failed (http_503, timeout, cut_off, ...); NULL when it succeeded",
            "TEXT",
        ),
        M("phase", "", "info", "Phase label", "TEXT"),
    ),
)

SERVING = Entity(
    "serving",
    keys=(),
    description="An inference server's own metrics, from its metrics endpoint (any engine plugin with the "
    "server_metrics role fills it); latencies over a window",
    metrics=(
        M("running", "requests", "gauge", "Requests running, all engines"),
        M("waiting", "requests", "gauge", "Requests waiting, all engines"),
        M("waiting_max", "requests", "gauge", "Requests waiting in the engine with the longest queue"),
        M("kv_cache_usage_pct", "%", "gauge", "KV-cache blocks in use: the mean over engines (never their sum)"),
        M("kv_cache_usage_max_pct", "%", "gauge", "KV-cache blocks in use in the fullest engine"),
        M("engines", "", "gauge", "Engines the server reports (data-parallel ranks)", "INTEGER"),
        M("prompt_tokens_total", "tokens", "counter", "Prompt tokens processed since the server started"),
        M("generation_tokens_total", "tokens", "counter", "Tokens generated since the server started"),
        M("preemptions_total", "", "counter", "Requests preempted since the server started"),
        M("requests_total", "requests", "counter", "Requests finished since the server started"),
        M("prompt_tokens_per_s", "tokens/s", "gauge", "Prompt tokens per second since the previous scrape"),
        M("generation_tokens_per_s", "tokens/s", "gauge", "Generated tokens per second since the previous scrape"),
        M("queue_seconds_total", "s", "counter", "Time requests waited in the queue, summed over requests"),
        M("prefill_seconds_total", "s", "counter", "Time requests spent in prefill, summed over requests"),
        M("decode_seconds_total", "s", "counter", "Time requests spent in decode, summed over requests"),
        *(
            metric
            for key, what in (("ttft", "TTFT"), ("itl", "Inter-token latency"), ("e2e", "End-to-end request latency"))
            for q in (50, 95, 99)
            for metric in (
                M(f"{key}_p{q}_s", "s", "gauge", f"{what} p{q} over the window (histogram bucket differences)"),
                M(f"{key}_p{q}_lo_s", "s", "gauge", f"Lower bound of the histogram bucket {what} p{q} lies in"),
                M(f"{key}_p{q}_hi_s", "s", "gauge", "Upper bound of that bucket (NULL: above the highest bound)"),
            )
        ),
    ),
)

SERVING_ENGINE = Entity(
    "serving_engine",
    keys=("engine",),
    key_types=("TEXT",),
    description="An inference server's gauges per engine (vLLM's engine label: one per data-parallel rank)",
    metrics=(
        M("running", "requests", "gauge", "Requests running in this engine"),
        M("waiting", "requests", "gauge", "Requests waiting in this engine"),
        M("kv_cache_usage_pct", "%", "gauge", "KV-cache blocks in use in this engine"),
    ),
)

PHASE = Entity(
    "phase",
    keys=(),
    span=True,
    description="A named stretch of the session (warm-up, a workload, ...)",
    metrics=(M("name", "", "info", "Phase name", "TEXT"),),
)

CORE_ENTITIES: tuple[Entity, ...] = (
    SERVING,
    SERVING_ENGINE,
    GPU,
    GPU_GPM,
    GPU_ENERGY,
    GPU_PROCESS,
    HOST,
    WATCHED,
    BUSIEST,
    TRAIN_STEP,
    REQUEST,
    PHASE,
)
