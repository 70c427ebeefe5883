"""The typed inputs of every metric: per-GPU reductions, training steps, requests and server counters of a
window, each built through an ``Aggregation`` (exact for reports, incremental for the dashboard)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from effmon.core.declare import GPM_ACTIVITY
from effmon.metrics.aggregate import Aggregation
from effmon.metrics.series import percentile
from effmon.metrics.window import Window

GIB = float(1 << 30)

# Clock-event reason bits that slow the GPU down (nvml.h); GpuIdle (0x1) and app-clock settings are not throttling.
THROTTLE_BITS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
}
THROTTLE_MASK = sum(THROTTLE_BITS)

PCU_FROM_GPM = "nvml_gpm_sm_active"
PCU_FROM_UTIL = "nvml_utilization_gpu"


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class GpuStats:
    """One GPU over a window. Field order is the order of the exports' per-GPU objects."""

    index: int
    name: str | None
    samples: int
    mem_used_avg_bytes: float | None
    mem_used_avg_gib: float | None
    mem_used_max_bytes: Any
    mem_total_bytes: Any
    mem_used_fraction: float | None
    util_gpu_avg_pct: float | None
    util_mem_avg_pct: float | None
    sm_active_avg_pct: float | None
    sm_occupancy_avg_pct: float | None
    tensor_active_avg_pct: float | None
    dram_bw_avg_pct: float | None
    pcu: float | None
    pcu_source: str | None
    power_avg_w: float | None
    power_max_w: Any
    power_limit_w: Any
    energy_integrated_j: float
    energy_covered_s: float
    energy_counter_j: float | None
    energy_counter_window: list[float] | None
    energy_integral_vs_counter: float | None
    sm_clock_avg_mhz: float | None
    sm_clock_max_mhz: Any
    mem_clock_avg_mhz: float | None
    temp_max_c: Any
    max_sm_clock_mhz: Any
    throttle_s: float | None
    throttle_reasons_seen: list[str] | None


def gpu_stats(agg: Aggregation, index: int, window: Window, info: dict[str, Any]) -> GpuStats:
    def r(column: str, entity: str = "gpu") -> Any:
        return agg.reduce(entity, index, column, window)

    mem, power = r("mem_used_bytes"), r("power_w")
    mem_total = r("mem_total_bytes").last or info.get("mem_total_bytes")
    gpm = {c: r(c, "gpu_gpm").average for c in GPM_ACTIVITY}
    util = r("util_gpu_pct").average
    pcu, source = (
        (gpm["sm_active_pct"] / 100.0, PCU_FROM_GPM)
        if gpm["sm_active_pct"] is not None
        else (util / 100.0, PCU_FROM_UTIL)
        if util is not None
        else (None, None)
    )
    counter = agg.counter("gpu_energy", index, "energy_counter_j", window)
    vs_counter = None
    if counter is not None and counter.delta and power.integral:
        between = agg.integral_between("gpu", index, "power_w", counter.start, counter.end)
        vs_counter = None if between is None else (between - counter.delta) / counter.delta
    flags = agg.flag_time("gpu", index, "clock_event_reasons", THROTTLE_MASK, window)
    sm_clock = r("sm_clock_mhz")
    return GpuStats(
        index=index,
        name=info.get("name"),
        samples=agg.samples("gpu", index, window),
        mem_used_avg_bytes=mem.average,
        mem_used_avg_gib=mem.average / GIB if mem.average is not None else None,
        mem_used_max_bytes=mem.maximum,
        mem_total_bytes=mem_total,
        mem_used_fraction=_div(mem.average, mem_total),
        util_gpu_avg_pct=util,
        util_mem_avg_pct=r("util_mem_pct").average,
        sm_active_avg_pct=gpm["sm_active_pct"],
        sm_occupancy_avg_pct=gpm["sm_occupancy_pct"],
        tensor_active_avg_pct=gpm["tensor_active_pct"],
        dram_bw_avg_pct=gpm["dram_bw_pct"],
        pcu=pcu,
        pcu_source=source,
        power_avg_w=power.integral / power.covered if power.covered else power.average,
        power_max_w=power.maximum,
        power_limit_w=r("power_limit_w").last or info.get("power_limit_w"),
        energy_integrated_j=power.integral,
        energy_covered_s=power.covered,
        energy_counter_j=counter.delta if counter else None,
        energy_counter_window=[counter.start, counter.end] if counter else None,
        energy_integral_vs_counter=vs_counter,
        sm_clock_avg_mhz=sm_clock.average,
        sm_clock_max_mhz=sm_clock.maximum,
        mem_clock_avg_mhz=r("mem_clock_mhz").average,
        temp_max_c=r("temp_c").maximum,
        max_sm_clock_mhz=info.get("max_sm_clock_mhz"),
        throttle_s=flags.seconds if flags else None,
        throttle_reasons_seen=[n for bit, n in THROTTLE_BITS.items() if flags.bits & bit] if flags else None,
    )


def all_gpu_stats(agg: Aggregation, window: Window, gpus: list[dict[str, Any]]) -> list[GpuStats]:
    """Each GPU's figures over the window; ``gpus``: the session's GPU descriptions (name, memory, driver)."""
    info = {g.get("index"): g for g in gpus}
    return [gpu_stats(agg, idx, window, info.get(idx, {})) for idx in agg.keys("gpu", window)]


@dataclass
class TrainingStats:
    steps: int  # optimizer steps (a step of a distributed run counted once, however many ranks took it)
    step_time_sum_s: float
    step_time_mean_s: float
    ranks: int
    step_time_p50_s: float | None
    step_time_p95_s: float | None
    tokens: int  # real (non-padding) tokens, or padded positions with --tokens padded: see tokens_counted
    samples: int
    tokens_per_s: float | None
    samples_per_s: float | None
    communication_measured: bool
    communication_s_sum: float | None  # exposed communication
    loss_first: float | None
    loss_last: float | None
    tokens_counted: str = "real"  # "real" (padding not counted) or "padded" (every input position)
    real_tokens: int | None = None
    padded_tokens: int | None = None
    rank_spread_mean_s: float | None = None  # per step: slowest rank's time minus the fastest's, averaged
    rank_step_time_mean_s: dict[int, float] | None = None
    communication_busy_s_sum: float | None = None
    phases_s: dict[str, float] | None = None  # evaluation, saving, logging: time kept out of the steps
    data_wait_s_sum: float | None = None
    """Time between one optimizer step's end and the next one's begin, less the evaluation, saving and logging
    phases there: fetching and collating the next batch (the data loader), summed over the steps."""


@dataclass
class StepGroup:
    """One optimizer step: the rows of the ranks that took it."""

    step: int | None
    rows: list[dict[str, Any]]

    @property
    def times(self) -> list[float]:
        return [r["t_end"] - r["t_start"] for r in self.rows]

    @property
    def latency(self) -> float:
        """The step's wall time across ranks: its slowest rank (robust to clock offsets between nodes)."""
        return max(self.times)

    @property
    def spread(self) -> float:
        return max(self.times) - min(self.times)

    def total(self, column: str) -> int | None:
        values = [r.get(column) for r in self.rows]
        return None if any(v is None for v in values) else int(sum(values))  # type: ignore[arg-type]

    @property
    def comm(self) -> float | None:
        """Exposed communication of the step: the least any rank waited beyond its computation (the slowest rank's
        wait is the communication itself; the others' waits add the time they waited for it)."""
        values = [r.get("comm_s") for r in self.rows]
        known = [float(v) for v in values if v is not None]
        return min(known) if len(known) == len(values) else None

    @property
    def comm_busy(self) -> float | None:
        values = [r.get("comm_busy_s") for r in self.rows]
        return None if any(v is None for v in values) else float(sum(values)) / len(values)  # type: ignore[arg-type]


@dataclass
class Steps:
    """A window's training steps, in (start, rank) order, and grouped into optimizer steps by step number."""

    rows: list[dict[str, Any]]

    @property
    def groups(self) -> list[StepGroup]:
        by_step: dict[Any, StepGroup] = {}
        for i, r in enumerate(self.rows):
            key = r.get("step") if r.get("step") is not None else ("row", i)
            if key not in by_step:
                by_step[key] = StepGroup(r.get("step"), [])
            by_step[key].rows.append(r)
        return sorted(by_step.values(), key=lambda g: min(r["t_start"] for r in g.rows))

    @property
    def times(self) -> list[float]:
        return [g.latency for g in self.groups]

    @property
    def ranks(self) -> int:
        return max(1, len({r.get("rank") or 0 for r in self.rows}))

    @property
    def comm_measured(self) -> bool:
        return bool(self.rows) and all(r.get("comm_s") is not None for r in self.rows)

    def comm(self) -> list[float] | None:
        """Exposed communication per optimizer step: measured, zeros for one process (nothing to synchronise),
        or None (several ranks, not measured)."""
        groups = self.groups
        if self.comm_measured:
            return [g.comm or 0.0 for g in groups]
        if self.ranks == 1:
            return [0.0] * len(groups)
        return None


def training_stats(
    steps: Steps,
    notes: list[str],
    tokens: str = "real",
    phases: dict[str, float] | None = None,
    between: list[tuple[float, float]] | None = None,
) -> TrainingStats | None:
    """Each rank reports what it processed itself: tokens and samples add up over ranks, once per token. A step's
    latency is its slowest rank's time; the run's time is the sum over optimizer steps."""
    if not steps.rows:
        return None
    groups = steps.groups
    times = [g.latency for g in groups]
    sum_time = sum(times)
    real, padded = _sum_known(steps.rows, "tokens"), _sum_known(steps.rows, "padded_tokens")
    counted, label = _counted_tokens(real, padded, tokens, notes)
    samples = sum(int(r.get("samples") or 0) for r in steps.rows)
    ranks = steps.ranks
    by_rank: dict[int, list[float]] = {}
    for r in steps.rows:
        by_rank.setdefault(int(r.get("rank") or 0), []).append(r["t_end"] - r["t_start"])
    spread = sum(g.spread for g in groups) / len(groups) if ranks > 1 else None
    comm = steps.comm()
    busy = [b for g in groups if (b := g.comm_busy) is not None]
    notes += _scale_notes(ranks, spread, comm is not None, phases)
    return TrainingStats(
        steps=len(groups),
        step_time_sum_s=sum_time,
        step_time_mean_s=sum_time / len(groups),
        ranks=ranks,
        step_time_p50_s=percentile(times, 50),
        step_time_p95_s=percentile(times, 95),
        tokens=counted,
        samples=samples,
        tokens_per_s=counted / sum_time if sum_time else None,
        samples_per_s=samples / sum_time if sum_time else None,
        communication_measured=comm is not None,
        communication_s_sum=sum(comm) if comm is not None else None,
        loss_first=steps.rows[0].get("loss"),
        loss_last=_last_loss(groups),
        tokens_counted=label,
        real_tokens=real,
        padded_tokens=padded,
        rank_spread_mean_s=spread,
        rank_step_time_mean_s={k: sum(v) / len(v) for k, v in sorted(by_rank.items())} if ranks > 1 else None,
        communication_busy_s_sum=sum(busy) if busy else None,
        phases_s=phases or None,
        data_wait_s_sum=data_wait(groups, between or []),
    )


def data_wait(groups: list[StepGroup], between: list[tuple[float, float]]) -> float | None:
    """Σ of the gaps between consecutive optimizer steps (the slowest rank's end to the first rank's begin), less
    the phases timed inside them (evaluation, saving, logging: ``between``); None with fewer than two steps."""
    if len(groups) < 2:
        return None
    spans = sorted(between)
    total = 0.0
    end = max(r["t_end"] for r in groups[0].rows)
    for g in groups[1:]:
        start = min(r["t_start"] for r in g.rows)
        if start > end:
            inside = sum(max(0.0, min(b, start) - max(a, end)) for a, b in spans if a < start and b > end)
            total += max(0.0, start - end - inside)
        end = max(end, max(r["t_end"] for r in g.rows))
    return total


def _counted_tokens(real: int | None, padded: int | None, tokens: str, notes: list[str]) -> tuple[int, str]:
    """The tokens TT counts (real ones unless padded positions are asked for and recorded), and which."""
    counted, label = real or 0, "real"
    if tokens == "padded":
        if padded is None:
            notes.append("--tokens padded: padded positions were not recorded; TT counts the tokens reported")
        else:
            counted, label = padded, "padded"
    if real is not None and padded is not None and padded > real:
        notes.append(
            f"tokens: {real:,} real, {padded:,} padded positions ({padded / real - 1:+.1%}); "
            f"TT counts {'padded positions' if label == 'padded' else 'real tokens'} (--tokens real|padded)"
        )
    return counted, label


def _scale_notes(ranks: int, spread: float | None, comm_measured: bool, phases: dict[str, float] | None) -> list[str]:
    """What a reader of a distributed (or interrupted) run must know: how ranks add up, what communication the
    step time holds, and what was kept out of the steps."""
    notes = []
    if spread is not None:
        notes.append(
            f"{ranks} ranks: tokens and samples summed over ranks (each counts its own batches), a step's latency "
            f"is its slowest rank's; rank spread {spread * 1e3:.1f} ms per step on average"
        )
    if not comm_measured:
        notes.append(
            "AL (training): communication was not measured apart (effmon times DDP gradient sync: a Trainer's "
            "automatically, a plain loop's with effmon.track.ddp(model); FSDP and DeepSpeed collectives are not "
            "timed apart); step wall time includes it"
        )
    if phases:
        kept = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in sorted(phases.items()))
        notes.append(f"kept out of AL/TT/ST: {kept}")
    return notes


def _sum_known(rows: list[dict[str, Any]], column: str) -> int | None:
    values = [r.get(column) for r in rows]
    known = [int(v) for v in values if v is not None]
    return sum(known) if known else None


def _last_loss(groups: list[StepGroup]) -> float | None:
    for g in reversed(groups):
        for r in g.rows:
            if r.get("loss") is not None:
                return float(r["loss"])
    return None


@dataclass
class Requests:
    """A window's inference requests that succeeded (failed ones are counted apart), one entry per request
    (a row may stand for a batch of identical requests)."""

    rows: list[dict[str, Any]]
    failed: Counter[str]

    def each(self, column: str, default: Any = None) -> list[Any]:
        out: list[Any] = []
        for r in self.rows:
            out += [r.get(column) if r.get(column) is not None else default] * int(r.get("requests") or 1)
        return out

    @property
    def latencies(self) -> list[float]:
        out: list[float] = []
        for r in self.rows:
            out += [r["t_end"] - r["t_start"]] * int(r.get("requests") or 1)
        return out

    @property
    def generated_tokens(self) -> list[int | None]:
        """Per request; None where the tokens were not counted (a server without usage: chunks are not tokens)."""
        return [None if x is None else int(x) for x in self.each("generated_tokens")]


def split_requests(rows: list[dict[str, Any]]) -> Requests:
    ok = sorted((r for r in rows if not r.get("error")), key=lambda r: r["t_start"])
    return Requests(ok, Counter(str(r["error"]) for r in rows if r.get("error")))


@dataclass
class InferenceStats:
    requests: int
    generated_tokens: int | None
    """None when some request's tokens were not counted (its row says chunks only)."""
    prompt_tokens: int
    busy_time_s: float
    generated_tokens_per_s: float | None
    requests_per_s: float | None
    latency_mean_s: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    failed: int
    failed_by_kind: dict[str, int]
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    ttft_p99_s: float | None = None


def busy_time(intervals: list[tuple[float, float]]) -> float:
    """Seconds with at least one interval open (overlaps counted once)."""
    total, cur_a, cur_b = 0.0, 0.0, None
    for a, b in sorted(intervals):
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    return total


def inference_stats(req: Requests) -> InferenceStats | None:
    if not req.rows:
        return None
    latencies = req.latencies
    each = req.generated_tokens
    tokens = [t for t in each if t is not None]
    counted = len(tokens) == len(each)
    ttfts = [x for x in req.each("ttft_s") if x is not None]
    busy = busy_time([(r["t_start"], r["t_end"]) for r in req.rows])
    return InferenceStats(
        requests=len(latencies),
        generated_tokens=sum(tokens) if counted else None,
        prompt_tokens=sum(int(x) for x in req.each("prompt_tokens", 0)),
        busy_time_s=busy,
        generated_tokens_per_s=sum(tokens) / busy if busy and counted else None,
        requests_per_s=len(latencies) / busy if busy else None,
        latency_mean_s=sum(latencies) / len(latencies) if latencies else None,
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        latency_p99_s=percentile(latencies, 99),
        failed=sum(req.failed.values()),
        failed_by_kind=dict(req.failed),
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p95_s=percentile(ttfts, 95),
        ttft_p99_s=percentile(ttfts, 99),
    )


@dataclass
class ServerStats:
    generation_tokens: float
    seconds: float
    generation_tokens_per_s: float | None
    source: str


def server_stats(agg: Aggregation, window: Window) -> ServerStats | None:
    """Tokens a serving engine generated in the window, from its own counter (``effmon attach --url``)."""
    gen = agg.counter("serving", 0, "generation_tokens_total", window)
    if gen is None:
        return None
    seconds = gen.end - gen.start
    return ServerStats(gen.delta, seconds, gen.delta / seconds if seconds > 0 else None, "server /metrics counters")
