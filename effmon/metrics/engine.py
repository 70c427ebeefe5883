"""The EfficientLLM metrics of a session (or a window of it), with their units and sources.

Definitions (see docs/metrics.md):
  AMU  (1/T)∫ memory_used dt, summed over GPUs, in GiB (2^30 bytes; the reference code's "GB")
  PCU  (1/T)∫ SM activity dt (NVML GPM) where available, else NVML utilisation; mean over GPUs
  AL   mean step wall time (training) or mean end-to-end request latency (inference)
  TT   Σ tokens / params / Σ step time;  ST  Σ samples / params / Σ step time
  IT   Σ generated tokens / time with at least one request in flight
  AEC  (1/T)∫ P dt summed over GPUs, in W; energy beside it from the counter and from integration
  MCR  (bits_original / bits_compressed) × (perf_compressed / perf_original)
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from effmon import __version__
from effmon.declare import GPM_ACTIVITY, GPU_COLUMNS
from effmon.metrics.series import integrate, percentile, time_average, time_where, value_at
from effmon.store import SessionReader

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


class MetricsError(Exception):
    pass


@dataclass
class Window:
    start: float
    end: float
    label: str
    session_start: float
    session_end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def relative(self) -> list[float]:
        return [round(self.start - self.session_start, 6), round(self.end - self.session_start, 6)]


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


def resolve_window(reader: SessionReader, window: str | None = None, phase: str | None = None) -> Window:
    lo, hi = reader.time_range()
    name = reader.meta().get("name", reader.path.name)
    if lo is None or hi is None or hi <= lo:
        raise MetricsError(f"session {name} holds no samples to compute metrics from (is it empty, or just started?)")
    if phase:
        phases = reader.dicts("phase")
        match = [p for p in phases if p["name"] == phase]
        if not match:
            known = ", ".join(p["name"] for p in phases) or "none recorded"
            raise MetricsError(f"no phase {phase!r} in session {name}; phases: {known}")
        return Window(match[0]["t_start"], match[0]["t_end"], f"phase {phase}", lo, hi)
    if window:
        try:
            a_text, b_text = window.split(":")
            a = float(a_text) if a_text.strip() else 0.0
            b = float(b_text) if b_text.strip() else hi - lo
        except ValueError:
            raise MetricsError(
                f"--window {window!r}: use START:END in seconds from the session start, e.g. 10:60"
            ) from None
        a = a if a >= 0 else (hi - lo) + a
        b = b if b >= 0 else (hi - lo) + b
        if b <= a:
            raise MetricsError(f"--window {window!r}: the end must come after the start")
        if a >= hi - lo or b <= 0:
            raise MetricsError(f"--window {window!r} is outside the session, which lasts {hi - lo:.1f} s")
        return Window(lo + max(a, 0.0), lo + min(b, hi - lo), f"window {window}", lo, hi)
    return Window(lo, hi, "whole session", lo, hi)


def _columns(reader: SessionReader, entity: str, cols: list[str]) -> list[str]:
    ent = reader.entities().get(entity)
    have = {m.name for m in ent.metrics} if ent is not None else set()
    return [c for c in cols if c in have]


def _by_gpu(reader: SessionReader, entity: str, cols: list[str]) -> dict[int, dict[str, list[Any]]]:
    cols = _columns(reader, entity, cols)
    if not reader.has(entity):
        return {}
    out: dict[int, dict[str, list[Any]]] = {}
    gpus = [g for (g,) in reader.db.execute(f"SELECT DISTINCT gpu FROM s_{entity}")]
    for gpu in sorted(int(g) for g in gpus):
        # A GPU's rows are written in time order: rowid order is time order, read by one table scan
        # (ordering by t would walk the time index row by row, several times slower here).
        rows = list(reader.rows(entity, ["t", *cols], "gpu = ?", (gpu,), order="rowid"))
        columns = list(zip(*rows)) if rows else [() for _ in range(len(cols) + 1)]
        out[gpu] = {name: list(values) for name, values in zip(["t", *cols], columns)}
    return out


class ComputeCache:
    """Lets ``compute`` of a growing session (the dashboard's "so far") do only the new work.

    Rows are read once and extended with what was appended since (rowids grow with time), and each
    time-weighted integral from the session start is extended from its cached prefix: a trapezoid
    integral splits exactly at a sample, so the result is the same as integrating from scratch.
    """

    def __init__(self) -> None:
        self.series: dict[str, tuple[int, dict[int, dict[str, list[Any]]]]] = {}
        self.spans: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self.prefix: dict[tuple[Any, ...], Any] = {}
        self.first: dict[tuple[Any, ...], tuple[int, int | None]] = {}
        self.first_t: dict[tuple[Any, ...], float] = {}
        self.dropped: dict[tuple[str, int], int] = {}

    @staticmethod
    def _owner(key: tuple[Any, ...]) -> tuple[str, int]:
        return ("gpu_gpm" if key[0] == "gpm" else "gpu", key[1])

    def trim(self, keep_at_least: int = 2000) -> None:
        """Drop rows every cached integral and fold has already consumed: memory stays flat as a
        session grows. Indices are shifted; sample counts keep the dropped rows in ``dropped``."""
        positions: dict[tuple[str, int], list[int]] = {}
        for key, (scanned, first_i) in self.first.items():
            pos = self.prefix[key][0] if key in self.prefix else (first_i if first_i is not None else scanned)
            positions.setdefault(self._owner(key), []).append(pos)
        for key, value in self.prefix.items():
            if key not in self.first:  # folds: (next index, accumulator)
                positions.setdefault(self._owner(key), []).append(value[0])
        for owner, pos in positions.items():
            offset = min(pos) - 1
            if offset < keep_at_least:
                continue
            entity, idx = owner
            series = self.series.get(entity, (0, {}))[1].get(idx)
            if not series:
                continue
            for col in series.values():
                del col[:offset]
            self.dropped[owner] = self.dropped.get(owner, 0) + offset
            for key in list(self.prefix):
                if self._owner(key) == owner:
                    i, acc = self.prefix[key]
                    self.prefix[key] = (i - offset, acc)
            for key in list(self.first):
                if self._owner(key) == owner:
                    scanned, first_i = self.first[key]
                    self.first[key] = (max(0, scanned - offset), None if first_i is None else max(0, first_i - offset))

    def by_gpu(
        self, reader: SessionReader, entity: str, cols: list[str], end: float = math.inf
    ) -> dict[int, dict[str, list[Any]]]:
        """Rows up to ``end`` (a replay's cursor: rows beyond it are read when the cursor gets there)."""
        cols = _columns(reader, entity, cols)
        if not reader.has(entity):
            return {}
        last_rowid, data = self.series.get(entity, (0, {}))
        cur = reader.db.execute(
            f"SELECT rowid, gpu, t, {', '.join(cols)} FROM s_{entity} WHERE rowid > ? AND t <= ? ORDER BY rowid",
            (last_rowid, end + 1.0),
        )
        for row in cur:
            last_rowid = row[0]
            series = data.setdefault(int(row[1]), {c: [] for c in ["t", *cols]})
            for name, value in zip(["t", *cols], row[2:]):
                series[name].append(value)
        self.series[entity] = (last_rowid, data)
        return data

    def dicts(self, reader: SessionReader, entity: str, end: float = math.inf) -> list[dict[str, Any]]:
        if not reader.has(entity):
            return []
        last_rowid, rows = self.spans.get(entity, (0, []))
        new = reader.dicts(entity, "rowid > ? AND t_end <= ? ORDER BY rowid", (last_rowid, end + 1.0))
        if new:
            last_rowid = reader.db.execute(
                f"SELECT MAX(rowid) FROM s_{entity} WHERE rowid > ? AND t_end <= ?", (last_rowid, end + 1.0)
            ).fetchone()[0]
            rows = rows + new
        self.spans[entity] = (last_rowid, rows)
        return rows

    def fold(self, key: tuple[Any, ...], end_index: int, step: Any, init: Any) -> Any:
        """``step(acc, i)`` over indices 0..end_index-1, continuing from the cached position."""
        i, acc = self.prefix.get(key, (0, init))
        if i > end_index:
            i, acc = 0, init
        for k in range(i, end_index):
            acc = step(acc, k)
        self.prefix[key] = (end_index, acc)
        return acc

    def average(
        self, key: tuple[Any, ...], ts: list[float], xs: list[Any], start: float, end: float
    ) -> tuple[float, float]:
        """(integral, covered) over [start, end], reusing the integral up to the last cached sample."""
        if not ts or start > ts[0]:
            return integrate(ts, xs, start, end)
        hi = bisect.bisect_right(ts, end)  # samples after ``end`` matter only for the edge value
        scanned, first_i = self.first.get(key, (0, None))
        if first_i is None:
            first_i = next((k for k in range(scanned, len(ts)) if xs[k] is not None), None)
            self.first[key] = (len(ts), first_i)
            if first_i is None:
                return 0.0, 0.0
            self.first_t[key] = ts[first_i]
        i_prev, area_prev = self.prefix.get(key, (first_i, 0.0))
        if i_prev >= len(ts) or ts[i_prev] > end:
            i_prev, area_prev = first_i, 0.0
        area_new, _ = integrate(ts[i_prev : hi + 1], xs[i_prev : hi + 1], ts[i_prev], end)
        # remember the integral up to the last non-missing sample at or before ``end``
        j = hi - 1
        while j > i_prev and xs[j] is None:
            j -= 1
        if j > i_prev:
            area_j, _ = integrate(ts[i_prev : j + 1], xs[i_prev : j + 1], ts[i_prev], ts[j])
            self.prefix[key] = (j, area_prev + area_j)
        k = min(hi, len(ts) - 1)
        while k > 0 and xs[k] is None:
            k -= 1
        covered = max(0.0, min(end, ts[k]) - max(start, self.first_t.get(key, ts[first_i])))
        return area_prev + area_new, covered


def _in_window(t_start: float, t_end: float, w: Window) -> bool:
    mid = (t_start + t_end) / 2.0
    return w.start <= mid <= w.end


def _busy_time(intervals: list[tuple[float, float]]) -> float:
    total, cur_a, cur_b = 0.0, None, None
    for a, b in sorted(intervals):
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a  # type: ignore[operator]
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a  # type: ignore[operator]
    return total


def _peak_flops(gpu_name: str | None) -> float | None:
    if not gpu_name:
        return None
    for key, flops in PEAK_BF16_FLOPS:
        if key in gpu_name:
            return flops
    return None


def _avg(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compute(
    reader: SessionReader,
    window: Window | None = None,
    *,
    params: int | None = None,
    precision: str | None = None,
    perf: float | None = None,
    baseline_precision: str | None = None,
    baseline_perf: float | None = None,
    with_series: bool = True,
    cache: ComputeCache | None = None,
) -> dict[str, Any]:
    """Everything effmon knows about a session window, as one JSON-ready dict."""
    meta = reader.meta()
    w = window or resolve_window(reader)
    notes: list[str] = []
    gpu_meta = {g.get("index"): g for g in meta.get("gpus") or []}

    gpu_cols = list(GPU_COLUMNS)
    gpm_cols = list(GPM_ACTIVITY)
    if cache is not None:
        gpu_series = cache.by_gpu(reader, "gpu", gpu_cols, w.end)
        gpm_series = cache.by_gpu(reader, "gpu_gpm", gpm_cols, w.end)
        energy_series = cache.by_gpu(reader, "gpu_energy", ["energy_counter_j"], w.end)
    else:
        gpu_series = _by_gpu(reader, "gpu", gpu_cols)
        gpm_series = _by_gpu(reader, "gpu_gpm", gpm_cols)
        energy_series = _by_gpu(reader, "gpu_energy", ["energy_counter_j"])

    per_gpu: list[dict[str, Any]] = []
    for idx in sorted(gpu_series):
        s = gpu_series[idx]
        ts = s["t"]
        lo_i, hi_i = bisect.bisect_left(ts, w.start), bisect.bisect_right(ts, w.end)
        inside = range(lo_i, hi_i)
        if not inside:
            continue

        def avg(col: str, series: dict[str, list[Any]] = s, name: str = "gpu") -> float | None:
            if col not in series:
                return None
            if cache is None:
                return time_average(series["t"], series[col], w.start, w.end)
            key = (name, idx, col)
            area, covered = cache.average(key, series["t"], series[col], w.start, w.end)
            if covered > 0:
                return area / covered
            if cache.first.get(key, (0, None))[1] is None:
                return None  # no reading at all: N/A, without rescanning the column
            return time_average(series["t"], series[col], w.start, w.end)

        def mx(col: str) -> float | None:
            if col not in s:
                return None
            xs = s[col]
            if cache is not None and lo_i == 0:
                return cache.fold(
                    ("max", idx, col),
                    hi_i,
                    lambda acc, k: acc if xs[k] is None or (acc is not None and acc >= xs[k]) else xs[k],
                    None,
                )
            vals = [xs[i] for i in inside if xs[i] is not None]
            return max(vals) if vals else None

        def last(col: str) -> Any:
            if col not in s:
                return None
            for i in reversed(inside):
                if s[col][i] is not None:
                    return s[col][i]
            return None

        g: dict[str, Any] = {
            "index": idx,
            "name": gpu_meta.get(idx, {}).get("name"),
            "samples": len(inside) + (cache.dropped.get(("gpu", idx), 0) if cache else 0),
        }
        mem_avg = avg("mem_used_bytes")
        mem_total = last("mem_total_bytes") or gpu_meta.get(idx, {}).get("mem_total_bytes")
        g.update(
            mem_used_avg_bytes=mem_avg,
            mem_used_avg_gib=mem_avg / GIB if mem_avg is not None else None,
            mem_used_max_bytes=mx("mem_used_bytes"),
            mem_total_bytes=mem_total,
            mem_used_fraction=(mem_avg / mem_total) if mem_avg is not None and mem_total else None,
            util_gpu_avg_pct=avg("util_gpu_pct"),
            util_mem_avg_pct=avg("util_mem_pct"),
        )
        gpm = gpm_series.get(idx)
        for col in gpm_cols:
            g[f"{col.removesuffix('_pct')}_avg_pct"] = avg(col, gpm, "gpm") if gpm else None
        if g["sm_active_avg_pct"] is not None:
            g["pcu"], g["pcu_source"] = g["sm_active_avg_pct"] / 100.0, "nvml_gpm_sm_active"
        elif g["util_gpu_avg_pct"] is not None:
            g["pcu"], g["pcu_source"] = g["util_gpu_avg_pct"] / 100.0, "nvml_utilization_gpu"
        else:
            g["pcu"], g["pcu_source"] = None, None
        area, covered = (
            cache.average(("gpu", idx, "power_w#area"), ts, s["power_w"], w.start, w.end)
            if cache
            else integrate(ts, s["power_w"], w.start, w.end)
        )
        g.update(
            power_avg_w=(area / covered) if covered else avg("power_w"),
            power_max_w=mx("power_w"),
            power_limit_w=last("power_limit_w") or gpu_meta.get(idx, {}).get("power_limit_w"),
            energy_integrated_j=area,
            energy_covered_s=covered,
        )
        g.update(_counter_energy(energy_series.get(idx), w))
        if g["energy_counter_j"] and g["energy_integrated_j"] and cache is None:
            # compare over the same interval the counter covers
            ia, _ = integrate(ts, s["power_w"], g["energy_counter_window"][0], g["energy_counter_window"][1])
            g["energy_integral_vs_counter"] = (ia - g["energy_counter_j"]) / g["energy_counter_j"]
        g.update(
            sm_clock_avg_mhz=avg("sm_clock_mhz"),
            sm_clock_max_mhz=mx("sm_clock_mhz"),
            mem_clock_avg_mhz=avg("mem_clock_mhz"),
            temp_max_c=mx("temp_c"),
            max_sm_clock_mhz=gpu_meta.get(idx, {}).get("max_sm_clock_mhz"),
        )
        reasons = s.get("clock_event_reasons", [])
        if last("clock_event_reasons") is not None:
            if cache is not None and lo_i == 0:

                def step(acc: tuple[float, int], k: int) -> tuple[float, int]:
                    held = ts[k + 1] - ts[k] if k + 1 < len(ts) and (reasons[k] or 0) & THROTTLE_MASK else 0.0
                    return acc[0] + held, acc[1] | (reasons[k] or 0)

                throttle_s, seen = cache.fold(("throttle", idx), max(0, hi_i - 1), step, (0.0, 0))
                seen |= reasons[hi_i - 1] or 0
                g["throttle_s"] = throttle_s
            else:
                flags = [bool(r & THROTTLE_MASK) if r is not None else None for r in reasons]
                g["throttle_s"] = time_where(ts, flags, w.start, w.end)
                seen = 0
                for i in inside:
                    seen |= reasons[i] or 0
            g["throttle_reasons_seen"] = [name for bit, name in THROTTLE_BITS.items() if seen & bit]
        else:
            g["throttle_s"], g["throttle_reasons_seen"] = None, None
        per_gpu.append(g)

    no_gpu: str | None = None
    if not per_gpu:
        no_gpu = (
            f"session {meta.get('name')} has no GPU readings (recorded without a GPU?)"
            if not gpu_series
            else f"no GPU readings fall inside {w.label}"
        )
    if per_gpu and any(g["throttle_s"] is None for g in per_gpu):
        notes.append("throttle time: clock-event reasons were not recorded (replayed trace or unsupported GPU)")

    if cache is not None:
        cache.trim()

    # ---- steps and requests ------------------------------------------------------------
    span_rows = (lambda e: cache.dicts(reader, e, w.end)) if cache else reader.dicts
    steps = [r for r in span_rows("train_step") if _in_window(r["t_start"], r["t_end"], w)]
    steps.sort(key=lambda r: (r["t_start"], r.get("rank") or 0))
    all_requests = [r for r in span_rows("request") if _in_window(r["t_start"], r["t_end"], w)]
    # failed and cut-off requests are counted apart and never enter latency or throughput figures
    requests = [r for r in all_requests if not r.get("error")]
    failed = Counter(str(r["error"]) for r in all_requests if r.get("error"))
    requests.sort(key=lambda r: r["t_start"])
    model = dict(meta.get("model") or {})
    if params:
        model["params"], model["source"] = params, "--params"
    n_params = model.get("params")

    step_times = [r["t_end"] - r["t_start"] for r in steps]
    comm = [r.get("comm_s") for r in steps]
    comm_measured = bool(steps) and all(c is not None for c in comm)
    tokens = [r.get("tokens") or 0 for r in steps]
    samples = [r.get("samples") or 0 for r in steps]
    # Ranks of a distributed run take their steps at the same time: tokens and samples add up over ranks,
    # time does not. The run's step time is the per-rank total, averaged over ranks.
    n_ranks = max(1, len({r.get("rank") or 0 for r in steps}))
    sum_step_time = sum(step_times) / n_ranks
    if n_ranks > 1:
        notes.append(f"{n_ranks} ranks: tokens and samples summed over ranks, step time averaged over ranks")
    training: dict[str, Any] | None = None
    if steps:
        training = {
            "steps": len(steps),
            "step_time_sum_s": sum_step_time,
            "step_time_mean_s": sum(step_times) / len(steps),
            "ranks": n_ranks,
            "step_time_p50_s": percentile(step_times, 50),
            "step_time_p95_s": percentile(step_times, 95),
            "tokens": sum(tokens),
            "samples": sum(samples),
            "tokens_per_s": sum(tokens) / sum_step_time if sum_step_time else None,
            "samples_per_s": sum(samples) / sum_step_time if sum_step_time else None,
            "communication_measured": comm_measured,
            "communication_s_sum": sum(c for c in comm if c is not None) if comm_measured else None,
            "loss_first": steps[0].get("loss"),
            "loss_last": steps[-1].get("loss"),
        }
        if not comm_measured:
            notes.append("AL (training): communication time was not measured apart; step wall time includes it")

    latencies: list[float] = []
    gen_tokens_each: list[int] = []
    prompt_tokens_each: list[int] = []
    ttfts: list[float] = []
    for r in requests:
        n = int(r.get("requests") or 1)
        latencies += [r["t_end"] - r["t_start"]] * n
        gen_tokens_each += [int(r.get("generated_tokens") or 0)] * n
        prompt_tokens_each += [int(r.get("prompt_tokens") or 0)] * n
        if r.get("ttft_s") is not None:
            ttfts += [r["ttft_s"]] * n
    inference: dict[str, Any] | None = None
    if requests:
        busy = _busy_time([(r["t_start"], r["t_end"]) for r in requests])
        inference = {
            "requests": len(latencies),
            "generated_tokens": sum(gen_tokens_each),
            "prompt_tokens": sum(prompt_tokens_each),
            "busy_time_s": busy,
            "generated_tokens_per_s": sum(gen_tokens_each) / busy if busy else None,
            "requests_per_s": len(latencies) / busy if busy else None,
            "latency_mean_s": _avg(latencies),
            "latency_p50_s": percentile(latencies, 50),
            "latency_p95_s": percentile(latencies, 95),
            "latency_p99_s": percentile(latencies, 99),
            "failed": sum(failed.values()),
            "failed_by_kind": dict(failed),
            "ttft_p50_s": percentile(ttfts, 50),
            "ttft_p95_s": percentile(ttfts, 95),
        }

    # A serving engine's own counters (effmon attach --url): tokens generated in the window
    server: dict[str, Any] | None = None
    if reader.has("serving"):
        rows = reader.dicts("serving", "t >= ? AND t <= ? ORDER BY t", (w.start, w.end))
        gen = [r["generation_tokens_total"] for r in rows if r.get("generation_tokens_total") is not None]
        if len(gen) >= 2:
            span = rows[-1]["t"] - rows[0]["t"]
            server = {
                "generation_tokens": gen[-1] - gen[0],
                "seconds": span,
                "generation_tokens_per_s": (gen[-1] - gen[0]) / span if span > 0 else None,
                "source": "server /metrics counters",
            }

    run_kind = (
        meta.get("run_kind")
        or ("inference" if server and not steps else None)
        or (
            "training"
            if steps and (not requests or sum_step_time >= (inference or {}).get("busy_time_s", 0))
            else "inference"
            if requests
            else "monitoring"
        )
    )

    if no_gpu:
        if not steps and not requests:
            raise MetricsError(f"{no_gpu}; EfficientLLM metrics need GPU memory, utilisation and power, or steps")
        notes.append(f"{no_gpu}: AMU, PCU, AEC and energy are null; step and request figures are computed")

    # ---- the EfficientLLM figures --------------------------------------------------------
    amu_bytes = sum(g["mem_used_avg_bytes"] or 0 for g in per_gpu)
    total_bytes = sum(g["mem_total_bytes"] or 0 for g in per_gpu)
    pcus = [g["pcu"] for g in per_gpu if g["pcu"] is not None]
    pcu_sources = sorted({g["pcu_source"] for g in per_gpu if g["pcu_source"]})
    aec = sum(g["power_avg_w"] or 0 for g in per_gpu) if per_gpu else None
    energy_int = sum(g["energy_integrated_j"] for g in per_gpu) if per_gpu else None
    counters = [g["energy_counter_j"] for g in per_gpu]
    energy_counter = sum(counters) if counters and all(c is not None for c in counters) else None  # type: ignore[arg-type]
    energy_best = energy_counter if energy_counter is not None else energy_int

    al_train = sum(step_times) / len(steps) if steps else None
    al_infer = _avg(latencies)
    al = al_train if run_kind == "training" else al_infer if run_kind == "inference" else None

    def per_param(total: float, time_s: float) -> float | None:
        return total / n_params / time_s if n_params and time_s else None

    tt = per_param(sum(tokens), sum_step_time) if steps else None
    st = per_param(sum(samples), sum_step_time) if steps else None
    it = inference["generated_tokens_per_s"] if inference else None
    if it is None and server is not None:  # watched through /metrics only: the server's own counters
        it = server["generation_tokens_per_s"]
        notes.append("IT from the server's generation-token counter (effmon attach --url), not client requests")
    if steps and not n_params:
        notes.append("TT and ST are null: the model's parameter count is unknown (give --params N)")

    mcr_value: float | None = None
    mcr_info: dict[str, Any] = {"value": None, "reason": "no performance scores given (--perf and --baseline-perf)"}
    precision = precision or meta.get("precision")
    if perf is not None or baseline_perf is not None:
        if perf is None or baseline_perf is None:
            raise MetricsError("MCR needs both --perf (this run) and --baseline-perf (the baseline)")
        if not precision:
            raise MetricsError("MCR needs this run's precision: give --precision (e.g. int4)")
        base_prec = baseline_precision or "bf16"
        mcr_value = mcr(precision_bits(base_prec), precision_bits(precision), baseline_perf, perf)
        mcr_info = {
            "value": mcr_value,
            "precision": precision,
            "bits": precision_bits(precision),
            "baseline_precision": base_prec,
            "baseline_bits": precision_bits(base_prec),
            "perf": perf,
            "baseline_perf": baseline_perf,
            "formula": "(bits_original / bits_compressed) * (perf_compressed / perf_original)",
        }

    gpu_name = per_gpu[0].get("name") if per_gpu else None
    peak = _peak_flops(gpu_name)
    mfu: dict[str, Any] = {"value": None}
    if run_kind == "training" and training and n_params and training["tokens_per_s"]:
        if peak:
            mfu = {
                "value": 6 * n_params * training["tokens_per_s"] / (peak * len(per_gpu)),
                "formula": "6 * params * tokens_per_s / (peak_bf16_dense_flops * gpus)",
                "peak_flops_per_gpu": peak,
            }
        else:
            mfu["reason"] = f"peak FLOP/s of {gpu_name!r} unknown"
    elif run_kind == "inference" and inference and n_params and it:
        if peak:
            mfu = {
                "value": 2 * n_params * it / (peak * len(per_gpu)),
                "formula": "2 * params * generated_tokens_per_s / (peak_bf16_dense_flops * gpus)",
                "peak_flops_per_gpu": peak,
            }
        else:
            mfu["reason"] = f"peak FLOP/s of {gpu_name!r} unknown"
    else:
        mfu["reason"] = "needs the parameter count and token throughput"

    tensor = [g["tensor_active_avg_pct"] for g in per_gpu if g["tensor_active_avg_pct"] is not None]
    n_tokens = training["tokens"] if run_kind == "training" and training else (inference or {}).get("generated_tokens")
    result: dict[str, Any] = {
        "effmon_version": __version__,
        "session": {
            k: meta.get(k)
            for k in ("name", "mode", "status", "command", "started_at", "ended_at", "exit_code", "precision")
        }
        | {
            "host": (meta.get("host") or {}).get("hostname"),
            "driver": next((g.get("driver") for g in meta.get("gpus") or []), None),
        },
        "run_kind": run_kind,
        "window": {
            "label": w.label,
            "start": w.start,
            "end": w.end,
            "duration_s": w.duration,
            "relative_s": w.relative(),
        },
        "model": model or None,
        "AMU": {
            "gib": amu_bytes / GIB if per_gpu else None,
            "fraction": amu_bytes / total_bytes if total_bytes else None,
            "bytes": amu_bytes if per_gpu else None,
        },
        "PCU": {
            "value": _avg(pcus),
            "source": pcu_sources[0] if len(pcu_sources) == 1 else pcu_sources or None,
            "tensor_active": sum(tensor) / len(tensor) / 100.0 if tensor else None,
            "nvml_utilization": _avg(
                [g["util_gpu_avg_pct"] / 100.0 for g in per_gpu if g["util_gpu_avg_pct"] is not None]
            ),
        },
        "AL": {"value": al, "training_s_per_step": al_train, "inference_s_per_request": al_infer},
        "TT": tt,
        "ST": st,
        "IT": it,
        "AEC": {
            "watts": aec,
            "energy_j": energy_best,
            "energy_counter_j": energy_counter,
            "energy_integrated_j": energy_int,
            "energy_source": "nvml_energy_counter" if energy_counter is not None else "integrated_power",
        },
        "MCR": mcr_info,
        "MFU": mfu,
        "energy_per": {
            "token_j": energy_best / n_tokens if n_tokens and energy_best is not None else None,
            "sample_j": energy_best / training["samples"]
            if training and training["samples"] and energy_best is not None
            else None,
            "request_j": energy_best / inference["requests"]
            if inference and inference["requests"] and energy_best is not None
            else None,
            "step_j": energy_best / training["steps"] if training and energy_best is not None else None,
            "generated_token_j": energy_best / server["generation_tokens"]
            if server and server["generation_tokens"] and energy_best is not None
            else None,
        },
        "training": training,
        "inference": inference,
        "server": server,
        "gpus": per_gpu,
        "throttle_s": (
            sum(g["throttle_s"] for g in per_gpu)
            if per_gpu and all(g["throttle_s"] is not None for g in per_gpu)
            else None
        ),
        "notes": notes,
        "_series": _series(gpu_series, gpm_series, w, per_gpu) if with_series else None,
        "_steps": steps,
        "_latencies": latencies,
        "_gen_tokens": gen_tokens_each,
        "_comm": comm if comm_measured else [],
    }
    return result


def _counter_energy(series: dict[str, list[Any]] | None, w: Window) -> dict[str, Any]:
    """Counter delta over the window, interpolating between the (rare) counter reads."""
    none = {"energy_counter_j": None, "energy_counter_window": None}
    if not series:
        return none
    ta, xa = series["t"], series["energy_counter_j"]
    if None in xa:
        pts = [(t, x) for t, x in zip(ta, xa) if x is not None]
        if len(pts) < 2:
            return none
        ta, xa = map(list, zip(*pts))
    if len(ta) < 2:
        return none
    a = max(w.start, ta[0])
    b = min(w.end, ta[-1])
    if b <= a:
        return none
    va, vb = value_at(ta, xa, a), value_at(ta, xa, b)
    if va is None or vb is None:
        return none
    return {"energy_counter_j": vb - va, "energy_counter_window": [a, b]}


def _series(
    gpu_series: dict[int, dict[str, list[Any]]],
    gpm_series: dict[int, dict[str, list[Any]]],
    w: Window,
    per_gpu: list[dict[str, Any]],
) -> dict[str, list[Any]]:
    """Machine-wide series at each tick: memory (GiB, summed), compute (ratio, mean), power (W, summed)."""
    use_gpm = all(g["pcu_source"] == "nvml_gpm_sm_active" for g in per_gpu)
    ticks: dict[float, list[tuple[float, float | None, float]]] = {}
    for idx, s in gpu_series.items():
        gpm = gpm_series.get(idx)
        gj = 0
        held: float | None = None
        for i, t in enumerate(s["t"]):
            if use_gpm and gpm:
                while gj < len(gpm["t"]) and gpm["t"][gj] <= t:
                    if gpm["sm_active_pct"][gj] is not None:
                        held = gpm["sm_active_pct"][gj]
                    gj += 1
                comp = held / 100.0 if held is not None else None
            else:
                u = s["util_gpu_pct"][i] if "util_gpu_pct" in s else None
                comp = u / 100.0 if u is not None else None
            if not (w.start <= t <= w.end):
                continue
            ticks.setdefault(round(t, 4), []).append(
                ((s["mem_used_bytes"][i] or 0) / GIB, comp, s["power_w"][i] or 0.0)
            )
    times = sorted(ticks)
    comp_vals = []
    for t in times:
        c = [v[1] for v in ticks[t] if v[1] is not None]
        comp_vals.append(sum(c) / len(c) if c else None)
    return {
        "timestamps": times,
        "memory_utilization": [sum(v[0] for v in ticks[t]) for t in times],
        "compute_utilization": comp_vals,
        "power_consumption": [sum(v[2] for v in ticks[t]) for t in times],
    }
