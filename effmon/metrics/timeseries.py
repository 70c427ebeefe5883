"""The machine-wide time series of the EfficientLLM record: one point per sampling tick."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from effmon.metrics.stats import GIB, PCU_FROM_GPM, GpuStats
from effmon.metrics.window import Window

if TYPE_CHECKING:
    import numpy as np

    from effmon.metrics.aggregate import ExactAggregation


@dataclass
class TimeSeries:
    timestamps: list[float]
    memory_utilization: list[float]
    """GiB in use, summed over GPUs."""
    compute_utilization: list[float | None]
    """SM activity (GPM) where every GPU has it, else NVML utilisation; ratio, mean over GPUs."""
    power_consumption: list[float]
    """W, summed over GPUs."""


def _held(gpu_t: np.ndarray, gpm_t: np.ndarray, gpm_x: np.ndarray) -> np.ndarray:
    """The latest GPM reading at or before each GPU sample (NaN before the first)."""
    import numpy as np

    ok = ~np.isnan(gpm_x)
    t, x = gpm_t[ok], gpm_x[ok]
    i = np.searchsorted(t, gpu_t, "right") - 1
    out = np.full(len(gpu_t), np.nan)
    have = i >= 0
    out[have] = x[i[have]]
    return out


def machine_series(agg: ExactAggregation, w: Window, gpus: list[GpuStats]) -> TimeSeries:
    """Per tick (time rounded to 0.1 ms, so the GPUs of one tick line up): memory summed, compute averaged
    over the GPUs that have a reading, power summed. Sums run in GPU order, left to right."""
    import numpy as np

    use_gpm = all(g.pcu_source == PCU_FROM_GPM for g in gpus)
    gpu_series, gpm_series = agg.series("gpu"), agg.series("gpu_gpm")
    times_by_gpu: list[np.ndarray] = []
    mem, comp, power = [], [], []
    for idx in sorted(gpu_series):
        s = gpu_series[idx]
        inside = (s.t >= w.start) & (s.t <= w.end)
        t = s.t[inside]
        if use_gpm and idx in gpm_series:
            c = _held(s.t, gpm_series[idx].t, gpm_series[idx]["sm_active_pct"])[inside] / 100.0
        else:
            c = s["util_gpu_pct"][inside] / 100.0 if "util_gpu_pct" in s else np.full(len(t), np.nan)
        times_by_gpu.append(t)
        mem.append(np.nan_to_num(s["mem_used_bytes"][inside], nan=0.0) / GIB)
        comp.append(c)
        power.append(np.nan_to_num(s["power_w"][inside], nan=0.0))
    raw = np.concatenate(times_by_gpu) if times_by_gpu else np.array([])
    distinct, where = np.unique(raw, return_inverse=True)  # each tick's time rounded once
    keys = np.array([round(v, 4) for v in distinct.tolist()])[where.reshape(-1)] if len(raw) else raw
    if not len(keys):
        return TimeSeries([], [], [], [])
    times, slot = np.unique(keys, return_inverse=True)
    mem_sum, power_sum = np.zeros(len(times)), np.zeros(len(times))
    comp_sum, comp_n = np.zeros(len(times)), np.zeros(len(times))
    m, c, p = np.concatenate(mem), np.concatenate(comp), np.concatenate(power)
    np.add.at(mem_sum, slot, m)
    np.add.at(power_sum, slot, p)
    ok = ~np.isnan(c)
    np.add.at(comp_sum, slot[ok], c[ok])
    np.add.at(comp_n, slot[ok], 1)
    mean = np.divide(comp_sum, comp_n, out=np.full(len(times), np.nan), where=comp_n > 0)
    return TimeSeries(
        timestamps=times.tolist(),
        memory_utilization=mem_sum.tolist(),
        compute_utilization=[None if v != v else v for v in mean.tolist()],
        power_consumption=power_sum.tolist(),
    )
