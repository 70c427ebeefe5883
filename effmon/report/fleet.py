"""Every host and GPU a Prometheus server knows, for ``effmon top --prometheus URL`` (the fleet view).

A refresh is a fixed handful of queries, whatever the fleet's size, run side by side:

- one instant query for the newest value of every dcgm-exporter gauge (``{__name__=~"DCGM_FI_...|..."}``);
- ``avg_over_time`` over the window of the gauges the EfficientLLM figures are made from (memory used and free,
  power, utilisation, SM and tensor activity), ``count_over_time`` of power (the samples behind them) and
  ``increase`` of the energy counter;
- two range queries (power and memory used) at ``window / points`` for the sparklines.

The window averages become per-GPU ``GpuStats`` and go through the same metric registry as a session's report, so
AMU, PCU and AEC here are the report's figures of the same stretch (at the scrape resolution: Prometheus averages
samples, a session integrates readings in time; with regular scrapes they agree, tests/test_fleet.py holds them to
1 % of each host's own session).
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from effmon.metrics import METRICS, Options, Result
from effmon.metrics.registry import Inputs, compute_all
from effmon.metrics.stats import GIB, PCU_FROM_GPM, PCU_FROM_UTIL, GpuStats
from effmon.report.fromprom import PrometheusError, gpu_key, instant_query, query_range, selector
from effmon.sources.dcgm import ENERGY_FIELD, FREE_FIELD, GPM_FIELDS, GPU_FIELDS, MIB

POWER, USED, UTIL = "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_UTIL"
SM, TENSOR = "DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"
LATEST = (*GPU_FIELDS, *GPM_FIELDS, FREE_FIELD, ENERGY_FIELD)
AVERAGED = (POWER, USED, FREE_FIELD, UTIL, SM, TENSOR)
SPARK_POINTS = 60
STRIP = ("AMU", "PCU", "AEC")
"""The EfficientLLM figures a fleet's GPU series give (steps and requests are not on Prometheus as spans)."""


@dataclass
class FleetGpu:
    host: str
    gpu: str
    labels: dict[str, str]
    now: dict[str, float] = field(default_factory=dict)
    """The newest value of each dcgm-exporter field, as exposed (MiB, W, %, ratio)."""
    avg: dict[str, float] = field(default_factory=dict)
    """Each averaged field's mean over the window."""
    samples: int = 0
    energy_j: float | None = None
    power_series: list[float] = field(default_factory=list)
    mem_series: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.labels.get("modelName") or "GPU"

    @property
    def current(self) -> bool:
        """Read at the newest scrape (a host that stopped answering keeps its window figures, not a now)."""
        return bool(self.now)

    def stats(self, index: int, window_s: float) -> GpuStats:
        """This GPU's window as the registry's input (what ``gpu_stats`` makes of a session's readings)."""
        a = self.avg
        used = a[USED] * MIB if USED in a else None
        total = (a[USED] + a[FREE_FIELD]) * MIB if USED in a and FREE_FIELD in a else None
        sm, util = a.get(SM), a.get(UTIL)
        pcu, source = (sm, PCU_FROM_GPM) if sm is not None else (None, None)
        if pcu is None and util is not None:
            pcu, source = util / 100, PCU_FROM_UTIL
        power = a.get(POWER)
        return GpuStats(
            index=index, name=self.labels.get("modelName"), samples=self.samples, mem_used_avg_bytes=used,
            mem_used_avg_gib=used / GIB if used is not None else None, mem_used_max_bytes=None, mem_total_bytes=total,
            mem_used_fraction=used / total if used is not None and total else None, util_gpu_avg_pct=util,
            util_mem_avg_pct=None, sm_active_avg_pct=sm * 100 if sm is not None else None,
            sm_occupancy_avg_pct=None, tensor_active_avg_pct=a[TENSOR] * 100 if TENSOR in a else None,
            dram_bw_avg_pct=None, pcu=pcu, pcu_source=source, power_avg_w=power, power_max_w=None,
            power_limit_w=self.now.get("DCGM_FI_DEV_POWER_MGMT_LIMIT"),
            energy_integrated_j=(power or 0.0) * window_s, energy_covered_s=window_s if power is not None else 0.0,
            energy_counter_j=self.energy_j, energy_counter_window=None, energy_integral_vs_counter=None,
            sm_clock_avg_mhz=None, sm_clock_max_mhz=None, mem_clock_avg_mhz=None, temp_max_c=None,
            max_sm_clock_mhz=None, throttle_s=None, throttle_reasons_seen=None,
        )  # fmt: skip


@dataclass
class FleetHost:
    name: str
    gpus: list[FleetGpu]
    results: dict[str, Result]

    @property
    def current(self) -> bool:
        return any(g.current for g in self.gpus)

    def now(self, field_name: str) -> list[float]:
        """The newest value of a field on each GPU that has one."""
        return [g.now[field_name] for g in self.gpus if field_name in g.now]

    def power_series(self) -> list[float]:
        """The host's power over the window: its GPUs' series summed point by point (their common, newest part)."""
        series = [g.power_series for g in self.gpus if g.power_series]
        n = min((len(s) for s in series), default=0)
        return [sum(points) for points in zip(*(s[len(s) - n :] for s in series), strict=True)] if n else []


@dataclass
class Fleet:
    url: str
    match: str
    start: float
    end: float
    hosts: list[FleetHost]
    results: dict[str, Result]
    """The whole job's figures over the window (every GPU of every host)."""
    took_s: float
    queries: int

    @property
    def window_s(self) -> float:
        return self.end - self.start

    @property
    def gpus(self) -> int:
        return sum(len(h.gpus) for h in self.hosts)


def results_of(gpus: list[GpuStats]) -> dict[str, Result]:
    """Every registered metric of these GPUs' window (no steps, no requests): the same functions as a report."""
    return compute_all(Inputs(gpus, None, None, None, "monitoring", {}, Options(), {}, []))


class _Values:
    """What a metric's strip formatter reads beside its own value: the other metrics' values."""

    def __init__(self, results: dict[str, Result]):
        self.results = results

    def value(self, key: str) -> Any:
        return self.results[key].value


def strip_text(results: dict[str, Result]) -> list[tuple[str, str]]:
    """The strip's (label, value) pairs, formatted by each metric's own strip declaration (as the dashboard's)."""
    out = []
    for key in STRIP:
        m, value = METRICS[key], results[key].value
        if value is None:
            text = "N/A"
        elif callable(m.strip):
            text = m.strip(value, _Values(results))
        else:
            text = str(m.strip).format(value)
        out.append((m.label, text))
    return out


def fleet_snapshot(url: str, match: str, start: float, end: float, points: int = SPARK_POINTS) -> Fleet:
    """Every GPU matching ``match`` with readings between ``start`` and ``end``, grouped by host."""
    began = time.perf_counter()
    if not end > start:
        raise PrometheusError("the window must end after it starts")
    jobs = _queries(url, match, start, end, points)
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {k: pool.submit(fn, *a) for k, (fn, *a) in jobs.items()}
        answers = {k: f.result() for k, f in futures.items()}
    return assemble(answers, url, match, start, end, time.perf_counter() - began)


def assemble(answers: dict[str, list[dict[str, Any]]], url: str, match: str, start: float, end: float,
             took_s: float = 0.0) -> Fleet:  # fmt: skip
    """The fleet from the queries' answers (``data.result`` of each, by the names ``_queries`` gives them)."""
    gpus = _gpus(answers)
    by_host: dict[str, list[FleetGpu]] = defaultdict(list)
    for key in sorted(gpus, key=lambda k: (k[0], _natural(k[1]))):
        by_host[key[0]].append(gpus[key])
    hosts, every = [], []
    named: dict[str, int] = defaultdict(int)
    for members in by_host.values():
        named[members[0].host] += 1
    for instance, members in sorted(by_host.items()):
        stats = [g.stats(i, end - start) for i, g in enumerate(members) if g.avg]
        every += stats
        # the node's name where it tells one scrape target from another, else the target itself (two exporters
        # on one machine, a Hostname label missing)
        name = members[0].host if members[0].host and named[members[0].host] == 1 else instance
        hosts.append(FleetHost(name, members, results_of(stats)))
    hosts.sort(key=lambda h: h.name)
    return Fleet(url, match, start, end, hosts, results_of(every), took_s, len(answers))


def _queries(url: str, match: str, start: float, end: float, points: int) -> dict[str, tuple[Any, ...]]:
    span = f"[{max(1, round((end - start) * 1000))}ms]"
    inner = match.strip()[1:-1].strip() if selector("", match) else ""  # selector() checks --match as reports do
    latest = "{" + ",".join(filter(None, [f'__name__=~"{"|".join(LATEST)}"', inner])) + "}"
    step = max((end - start) / points, 0.001)
    # A sample holds until the next one, so the stretch [start, end) is made of the samples taken from start up to,
    # not including, end: the range selector (which takes (at - span, at]) is evaluated 1 ms before the end.
    at = end - 0.001
    jobs: dict[str, tuple[Any, ...]] = {"latest": (instant_query, url, latest, end)}
    for f in AVERAGED:
        jobs[f"avg:{f}"] = (instant_query, url, f"avg_over_time({selector(f, match)}{span})", at)
    jobs["count"] = (instant_query, url, f"count_over_time({selector(POWER, match)}{span})", at)
    jobs["energy"] = (instant_query, url, f"increase({selector(ENERGY_FIELD, match)}{span})", at)
    jobs["spark:power"] = (query_range, url, selector(POWER, match), start, end, step)
    jobs["spark:mem"] = (query_range, url, selector(USED, match), start, end, step)
    return jobs


def _gpus(answers: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], FleetGpu]:
    gpus: dict[tuple[str, str], FleetGpu] = {}

    def gpu(metric: dict[str, str]) -> FleetGpu:
        key = gpu_key(metric)
        if key not in gpus:
            gpus[key] = FleetGpu(host=metric.get("Hostname") or key[0], gpu=key[1], labels=dict(metric))
        return gpus[key]

    for r in answers["latest"]:
        gpu(r["metric"]).now[r["metric"]["__name__"].removesuffix("_total")] = float(r["value"][1])
    for f in AVERAGED:
        for r in answers[f"avg:{f}"]:
            gpu(r["metric"]).avg[f] = float(r["value"][1])
    for r in answers["count"]:
        gpu(r["metric"]).samples = int(float(r["value"][1]))
    for r in answers["energy"]:
        gpu(r["metric"]).energy_j = float(r["value"][1]) / 1e3  # the counter is in mJ
    for r in answers["spark:power"]:
        gpu(r["metric"]).power_series = [float(v) for _, v in r["values"]]
    for r in answers["spark:mem"]:
        gpu(r["metric"]).mem_series = [float(v) * MIB for _, v in r["values"]]
    return gpus


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 30, text)
