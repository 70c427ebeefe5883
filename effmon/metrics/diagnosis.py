"""Why a step is slow: where the training time goes, and one line that says what limits the run.

Two figures are declared here like every other: the share of the training time spent waiting for data (between
one optimizer step's end and the next one's begin, less evaluation, saving and logging) and the share spent in
exposed communication. ``diagnose(summary)`` then reads the registry's figures (these, SM and tensor activity,
throttle time, the ranks' step times) and applies the rules below, in order: each is a declaration (name, a test of the
figures, what it means, the fix). The dashboard and every report show the same line::

    step 410 ms: 31 % waiting for data · 18 % exposed all-reduce · SM active 42 % · tensor 9 % · not throttled
    data-bound: the GPU waits for the next batch; more DataLoader workers (num_workers), pin_memory, prefetching
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from effmon.metrics.registry import NA, Inputs, metric

NO_STEPS = NA("no training steps in the window")


def _wall(x: Inputs) -> float | None:
    """The steps' time and the waits between them (evaluation, saving and logging left out)."""
    t = x.training
    if t is None or t.data_wait_s_sum is None:
        return None
    return t.step_time_sum_s + t.data_wait_s_sum


@metric(
    "data_wait_share",
    label="waiting for data",
    unit="",
    better="lower",
    needs=("training",),
    json=("diagnosis", "data_wait_share"),
    family="diagnosis",
    fmt=".1%",
    export="effmon_training_data_wait_ratio",
)
def data_wait_share(x: Inputs) -> float | NA:
    """Share of the training time between steps, waiting for the next batch (fetching and collating it): the
    gaps between optimizer steps, less evaluation, saving and logging, over those gaps plus the steps."""
    if not x.training:
        return NO_STEPS
    wall = _wall(x)
    if wall is None or x.training.data_wait_s_sum is None:
        return NA("fewer than two steps")
    return x.training.data_wait_s_sum / wall if wall else NA("no step time")


@metric(
    "comm_share",
    label="exposed communication",
    unit="",
    better="lower",
    needs=("training",),
    json=("diagnosis", "communication_share"),
    family="diagnosis",
    fmt=".1%",
    export="effmon_training_exposed_communication_ratio",
)
def comm_share(x: Inputs) -> float | NA:
    """Share of the training time a step waits for gradient synchronisation beyond its computation."""
    if not x.training:
        return NO_STEPS
    if x.training.communication_s_sum is None:
        return NA("communication was not measured (several ranks without effmon.track.ddp)")
    wall = _wall(x) or x.training.step_time_sum_s
    return x.training.communication_s_sum / wall if wall else NA("no step time")


@dataclass(frozen=True)
class Figures:
    """What the rules read, from a summary (None: not known)."""

    step_s: float | None
    data: float | None
    comm: float | None
    sm: float | None
    """PCU: SM activity, or NVML utilisation where the GPU has no GPM (then said so)."""
    sm_from_gpm: bool
    tensor: float | None
    throttled: float | None
    """Share of the window some GPU was throttled (power, temperature)."""
    spread: float | None
    """The slowest rank's mean step over the median rank's (1: no straggler)."""


@dataclass(frozen=True)
class Rule:
    name: str
    fires: Callable[[Figures], bool]
    means: str
    fix: str


def _gt(value: float | None, limit: float) -> bool:
    return value is not None and value > limit


RULES = (
    Rule("data-bound", lambda f: _gt(f.data, 0.30), "the GPU waits for the next batch",
         "more DataLoader workers (num_workers), pin_memory=True, prefetch_factor; pre-tokenise the data set"),
    Rule("communication-bound", lambda f: _gt(f.comm, 0.30), "steps wait for the gradient all-reduce",
         "larger batches per step (gradient accumulation), bucket_cap_mb, overlap (DDP's defaults), faster links"),
    Rule("throttled", lambda f: _gt(f.throttled, 0.10), "the GPU ran below its clocks (power or temperature)",
         "check the power limit and cooling (nvidia-smi -q -d PERFORMANCE); compare runs on an unthrottled GPU"),
    Rule("straggler", lambda f: _gt(f.spread, 1.2), "one rank is slower than the others and they wait for it",
         "look at that rank's GPU and host (a throttled GPU, a busy CPU, an uneven data shard)"),
    Rule("low SM activity", lambda f: f.sm is not None and f.sm < 0.30,
         "the GPU's SMs are idle most of the time: too little work per launch (small batches, decoding)",
         "larger batches or more concurrent requests; for decoding, batching is the lever"),
    Rule("compute-bound", lambda f: f.sm is not None and f.sm >= 0.30,
         "the GPU is busy with the work itself: nothing else limits this run",
         "a faster kernel path (bf16, tensor cores, fused attention) or a larger GPU; quantization for serving"),
)  # fmt: skip
"""In order: the first that fires is the diagnosis, the others are said beside it; compute-bound only when
nothing else fires."""


@dataclass(frozen=True)
class Diagnosis:
    line: str
    """``step 410 ms: 31 % waiting for data · 18 % exposed all-reduce · SM active 42 % · tensor 9 % · ...``"""
    fired: list[Rule]
    window: str = ""
    """Over which window (its label): ``1 min``, ``lora_finetune``, ``whole session``."""

    @property
    def verdict(self) -> str:
        """``data-bound: the GPU waits for the next batch; more DataLoader workers ...``, or why none."""
        if not self.fired:
            return "no diagnosis: the figures it needs (steps, SM activity) are not in this window"
        rule = self.fired[0]
        also = f" (also: {', '.join(r.name for r in self.fired[1:])})" if len(self.fired) > 1 else ""
        return f"{rule.name}{also}: {rule.means}; {rule.fix}"

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "rules": [r.name for r in self.fired], "verdict": self.verdict}


def figures(summary: Any) -> Figures:
    def value(key: str) -> Any:
        return summary.value(key) if key in summary.results else None

    gpus = list(summary.gpus or [])
    span = summary.window.duration if summary.window else 0
    throttled = value("throttle_s")
    t = summary.training
    spread = None
    if t is not None and t.rank_step_time_mean_s and len(t.rank_step_time_mean_s) > 1:
        means = sorted(t.rank_step_time_mean_s.values())
        median = means[len(means) // 2]
        spread = max(means) / median if median else None
    return Figures(
        step_s=t.step_time_mean_s if t is not None else None,
        data=value("data_wait_share"),
        comm=value("comm_share"),
        sm=value("PCU"),  # the registry's: SM activity (NVML GPM) where the GPU has it, else NVML utilisation
        sm_from_gpm=value("PCU_source") == "nvml_gpm_sm_active",
        tensor=value("tensor_active"),
        throttled=throttled / (span * max(1, len(gpus))) if throttled is not None and span > 0 else None,
        spread=spread,
    )


def diagnose(summary: Any) -> Diagnosis:
    """The one line and the rules that fire, for a summary of any window."""
    f = figures(summary)
    parts = []
    if f.step_s is not None:
        parts.append(f"step {f.step_s * 1000:.0f} ms")
    shares = []
    if f.data is not None:
        shares.append(f"{f.data:.0%} waiting for data")
    if f.comm is not None and f.comm > 0:
        shares.append(f"{f.comm:.0%} exposed all-reduce")
    if f.sm is not None:
        shares.append(f"SM active {f.sm:.0%}" if f.sm_from_gpm else f"GPU busy {f.sm:.0%} (NVML utilisation)")
    if f.tensor is not None:
        shares.append(f"tensor {f.tensor:.0%}")
    if f.throttled is not None:
        shares.append("not throttled" if f.throttled < 0.01 else f"throttled {f.throttled:.0%} of the time")
    line = (parts[0] + ": " if parts else "") + " · ".join(shares)
    fired = [r for r in RULES if r.fires(f)]
    if len(fired) > 1:
        fired = [r for r in fired if r.name != "compute-bound"]
    return Diagnosis(line or "no figures yet", fired, summary.window.label if summary.window else "")
