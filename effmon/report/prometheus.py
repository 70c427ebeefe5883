"""A session on a Prometheus endpoint: GPU gauges under dcgm-exporter's names and labels, effmon's LLM figures.

The exporter is one more reader of the session file (sources -> sampler -> session -> exports): each scrape asks
the session for the newest GPU readings and for the step and request rows recorded since the last scrape, so a
scrape costs a few small queries however long the session is. It serves a session being recorded by the same
process (``--prometheus ADDR`` on record / run / serve / top) or by another (``effmon export NAME``), and a
finished one (its last values).

GPU figures keep dcgm-exporter's field names, units and labels (``gpu``, ``UUID``, ``device``, ``modelName``,
``Hostname``), so Grafana boards made for dcgm-exporter work; the energy counter is exposed, as dcgm-exporter
does, as a counter named without ``_total``. effmon's own figures are ``effmon_*``, labelled with the session
and the job's run id.
"""

from __future__ import annotations

import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effmon.core.store import SessionReader

MIB = 1024 * 1024

DCGM_LABELS = ("gpu", "UUID", "device", "modelName", "Hostname")

DCGM_GAUGES: tuple[tuple[str, str, str, float], ...] = (
    # (dcgm-exporter field, its help text, effmon's column, scale from effmon's unit to dcgm-exporter's)
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "sm_clock_mhz", 1.0),
    ("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", "mem_clock_mhz", 1.0),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temp_c", 1.0),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_w", 1.0),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "Power management limit (in W).", "power_limit_w", 1.0),
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "util_gpu_pct", 1.0),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", "util_mem_pct", 1.0),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "mem_used_bytes", 1.0 / MIB),
)

DCGM_PROF: tuple[tuple[str, str, str], ...] = (
    # GPM activity (effmon keeps percentages; DCGM profiling fields are ratios 0-1)
    ("DCGM_FI_PROF_SM_ACTIVE", "The ratio of cycles an SM has at least 1 warp assigned.", "sm_active_pct"),
    ("DCGM_FI_PROF_SM_OCCUPANCY", "The ratio of number of warps resident on an SM.", "sm_occupancy_pct"),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "Ratio of cycles the tensor (HMMA) pipe is active.", "tensor_active_pct"),
    ("DCGM_FI_PROF_DRAM_ACTIVE", "Ratio of cycles the device memory interface is active.", "dram_bw_pct"),
)

Latest = dict[str, dict[Any, dict[str, Any]]]
"""The newest row of each GPU, by entity (gpu, gpu_gpm, gpu_energy), read once per scrape."""

REGISTRY_EVERY_S = 10.0
"""The registry's gauges are evaluated again at most this often (and only when the session has grown): a scrape in
between serves the last values. Prometheus scrapes every 15 s by default; the step and request counters and the
histograms above are exact at every scrape."""

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class Histogram:
    """Cumulative bucket counts, grown as rows arrive (a Prometheus histogram never shrinks)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def add(self, value: float | None) -> None:
        if value is None or value != value:
            return
        if not self.counts:
            self.counts = [0] * len(self.bounds)
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.n += 1

    def buckets(self) -> list[tuple[str, float]]:
        counts = self.counts or [0] * len(self.bounds)
        return [(repr(b), float(c)) for b, c in zip(self.bounds, counts, strict=True)] + [("+Inf", float(self.n))]


@dataclass
class Totals:
    """What the session's step and request rows add up to so far (read incrementally by row cursor)."""

    steps: int = 0
    tokens: int = 0
    samples: int = 0
    step_seconds: Histogram = field(default_factory=lambda: Histogram(STEP_BUCKETS))
    requests: dict[str, int] = field(default_factory=dict)
    output_tokens: int = 0
    ttft: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    step_cursor: int = 0
    request_cursor: int = 0
    clock_rank: int | None = None
    """The rank whose steps are counted and timed: the first seen (a node of a multi-node job has no rank 0)."""


class SessionCollector:
    """A prometheus_client collector over one session file (thread-safe: one scrape reads at a time)."""

    def __init__(self, path: Path, hostname: str | None = None, live: Any = None):
        self.path = path
        self.hostname = hostname or socket.gethostname()
        self.live = live
        """The recording's in-memory latest readings, when it runs in this process (``--prometheus``): a scrape
        then sees each reading as it is taken, not up to a flush interval later from the file."""
        self.totals = Totals()
        self.lock = threading.Lock()
        self._reader: SessionReader | None = None
        self._meta: dict[str, Any] | None = None
        self._aggregation: Any = None
        self._aggregated_to = -float("inf")
        self._evaluated_at = -float("inf")
        self._values: dict[str, Any] = {}

    def reader(self) -> SessionReader:
        if self._reader is None:
            self._reader = SessionReader(self.path)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._aggregation, self._aggregated_to, self._evaluated_at = None, -float("inf"), -float("inf")

    def collect(self) -> Iterator[Any]:
        with self.lock:
            yield from self._collect()

    def _collect(self) -> Iterator[Any]:
        r = self.reader()
        if self._meta is None or not self._meta.get("gpus"):
            self._meta = r.meta()
        _, now = r.time_range()
        latest = {entity: self._latest(r, entity, now) for entity in ("gpu", "gpu_gpm", "gpu_energy")}
        labels = {gpu: self._labels(gpu) for rows in latest.values() for gpu in rows}
        if now is not None or self.live is not None:  # nothing recorded yet: no GPU families at all
            yield from self._gpu_families(latest, labels)
        self._advance(r)
        yield from self._llm_families(latest, now)

    # -- GPUs, as dcgm-exporter names them ----------------------------------------------------------
    def _labels(self, gpu: int) -> list[str]:
        info = {g.get("index"): g for g in (self._meta or {}).get("gpus") or []}.get(gpu, {})
        return [str(gpu), str(info.get("uuid") or ""), f"nvidia{gpu}", str(info.get("name") or ""), self.hostname]

    def _gpu_families(self, latest: Latest, labels: dict[Any, list[str]]) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        gpus, gpm = latest["gpu"], latest["gpu_gpm"]
        for name, help_text, column, scale in DCGM_GAUGES:
            fam = GaugeMetricFamily(name, help_text, labels=DCGM_LABELS)
            for gpu, row in sorted(gpus.items()):
                if row.get(column) is not None:
                    fam.add_metric(labels[gpu], float(row[column]) * scale)
            yield fam
        free = GaugeMetricFamily("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels=DCGM_LABELS)
        for gpu, row in sorted(gpus.items()):
            if row.get("mem_total_bytes") is not None and row.get("mem_used_bytes") is not None:
                free.add_metric(labels[gpu], (row["mem_total_bytes"] - row["mem_used_bytes"]) / MIB)
        yield free
        for name, help_text, column in DCGM_PROF:
            fam = GaugeMetricFamily(name, help_text, labels=DCGM_LABELS)
            for gpu, row in sorted(gpm.items()):
                if row.get(column) is not None:
                    fam.add_metric(labels[gpu], float(row[column]) / 100.0)
            yield fam
        yield self._energy_counter(latest["gpu_energy"], labels)

    def _energy_counter(self, energy: dict[Any, dict[str, Any]], labels: dict[Any, list[str]]) -> Any:
        from prometheus_client.core import Metric

        counter = Metric(
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy consumption since boot (in mJ).", "counter"
        )
        for gpu, row in sorted(energy.items()):
            joules = row.get("energy_counter_j")
            if joules is None:
                joules = row.get("energy_integrated_j")  # no hardware counter: power integrated since the start
            if joules is not None:
                counter.add_sample(counter.name, dict(zip(DCGM_LABELS, labels[gpu], strict=True)), joules * 1e3)
        return counter

    def _latest(self, r: SessionReader, entity: str, now: float | None) -> dict[Any, dict[str, Any]]:
        """The newest row of each GPU: from the recording's live state in this process, else from the file."""
        if self.live is not None:
            rows = {row["gpu"]: row for row in self.live.of(entity) if row.get("gpu") is not None}
            if rows:
                return rows
        if now is None:
            return {}
        return r.latest(entity, now, lookbacks=(5.0, 120.0, 1e9) if entity == "gpu_energy" else (2.0, 30.0))

    # -- effmon's own figures ------------------------------------------------------------------------
    def _advance(self, r: SessionReader) -> None:
        t = self.totals
        steps, t.step_cursor = r.spans("train_step", cursor=t.step_cursor)
        for row in steps:
            t.tokens += int(row.get("tokens") or 0)
            t.samples += int(row.get("samples") or 0)
            rank = int(row.get("rank") or 0)
            if t.clock_rank is None:
                t.clock_rank = rank  # one rank's clock counts the steps and times them (a node's lowest, usually)
            if rank == t.clock_rank:
                t.steps += 1
                t.step_seconds.add(row["t_end"] - row["t_start"])
        requests, t.request_cursor = r.spans("request", cursor=t.request_cursor)
        for row in requests:
            n = int(row.get("requests") or 1)
            outcome = "failed" if row.get("error") else "succeeded"
            t.requests[outcome] = t.requests.get(outcome, 0) + n
            if outcome == "succeeded":
                t.output_tokens += int(row.get("generated_tokens") or 0) * n
                t.ttft.add(row.get("ttft_s"))
                t.itl.add(row.get("itl_token_mean_s") or row.get("itl_mean_s"))
                t.e2e.add(row["t_end"] - row["t_start"])

    def _llm_families(self, latest: Latest, now: float | None) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        meta, t = self._meta or {}, self.totals
        session, run_id = self.path.stem, str(meta.get("run_id") or "")
        base = ("session", "run_id")
        labels = [session, run_id]
        info = GaugeMetricFamily("effmon_session_info", "The session being exported (value 1).", labels=[*base, "kind"])
        info.add_metric([*labels, str(meta.get("kind") or "")], 1.0)
        yield info
        newest = max((float(row["t"]) for row in latest["gpu"].values()), default=now)
        yield _gauge("effmon_session_time_seconds", "The session's clock at its newest reading (Unix time; a "
                     "replay's is the trace's).", base, labels, newest)  # fmt: skip
        if t.steps:
            yield _counter(CounterMetricFamily, "effmon_training_steps", "Optimizer steps.", base, labels, t.steps)
            yield _counter(CounterMetricFamily, "effmon_training_tokens", "Input tokens trained on (all ranks).",
                           base, labels, t.tokens)  # fmt: skip
            hist = HistogramMetricFamily("effmon_training_step_seconds", "Optimizer step time.", labels=base)
            hist.add_metric(labels, t.step_seconds.buckets(), t.step_seconds.total)
            yield hist
        if t.requests:
            fam = CounterMetricFamily("effmon_serving_requests", "Requests finished.", labels=[*base, "outcome"])
            for outcome, n in sorted(t.requests.items()):
                fam.add_metric([*labels, outcome], n)
            yield fam
            yield _counter(CounterMetricFamily, "effmon_serving_output_tokens", "Generated tokens (where counted).",
                           base, labels, t.output_tokens)  # fmt: skip
            for name, hist_data, help_text in (
                ("effmon_serving_ttft_seconds", t.ttft, "Time to the first generated text."),
                ("effmon_serving_itl_seconds", t.itl, "Inter-token latency (per token where known), request mean."),
                ("effmon_serving_e2e_seconds", t.e2e, "Request end-to-end time."),
            ):
                hist = HistogramMetricFamily(name, help_text, labels=base)
                hist.add_metric(labels, hist_data.buckets(), hist_data.total)
                yield hist
        yield from self._registry_families(base, labels)

    def _registry_families(self, base: tuple[str, ...], labels: list[str]) -> Iterator[Any]:
        """Every metric declared with an export name, as a gauge of its value over the session so far: the same
        declaration, inputs and arithmetic as ``effmon report`` (running sums extended scrape by scrape, as the
        dashboard's), evaluated at most every REGISTRY_EVERY_S. A metric with no value yet has no sample (never a
        zero)."""
        from effmon.metrics import METRICS, IncrementalAggregation, MetricsError, evaluate, so_far

        r = self.reader()
        lo, hi = r.time_range()
        fresh = time.monotonic() - self._evaluated_at < REGISTRY_EVERY_S
        if lo is not None and hi is not None and hi > lo and hi != self._aggregated_to and not fresh:
            if self._aggregation is None or hi < self._aggregated_to:
                self._aggregation = IncrementalAggregation(r)
            self._aggregated_to, self._evaluated_at = hi, time.monotonic()
            try:
                summary = evaluate(r, so_far(lo, hi), aggregation=self._aggregation, with_series=False)
                self._values = {key: summary.value(key) for key, m in METRICS.items() if m.export}
            except MetricsError:
                self._values = {}
        for m in METRICS.values():
            if m.export is None:
                continue
            value = self._values.get(m.key)
            number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            number = number if number is not None and math.isfinite(number) else None
            yield _gauge(m.export, f"{m.description} [{m.unit or 'ratio'}; {m.key}, over the session so far]",
                         base, labels, number)  # fmt: skip


def _gauge(name: str, help_text: str, base: tuple[str, ...], labels: list[str], value: float | None) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    fam = GaugeMetricFamily(name, help_text, labels=base)
    if value is not None:
        fam.add_metric(labels, value)
    return fam


def _counter(cls: Any, name: str, help_text: str, base: tuple[str, ...], labels: list[str], value: float) -> Any:
    fam = cls(name, help_text, labels=base)
    fam.add_metric(labels, value)
    return fam


class Exporter:
    """The endpoint: prometheus_client's own HTTP server on its own registry (nothing of effmon's process
    besides the session is exposed), started on a daemon thread."""

    def __init__(self, path: Path, addr: str = "127.0.0.1:9400", hostname: str | None = None, live: Any = None):
        self.host, self.port = parse_addr(addr)
        self.collector = SessionCollector(path, hostname, live)
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def start(self) -> Exporter:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        try:
            self.server, self.thread = start_http_server(self.port, addr=self.host, registry=registry)
        except OSError as exc:
            raise ExporterError(
                f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc}): choose another port with "
                f"--prometheus {self.host}:PORT (0 picks a free one)"
            ) from None
        self.port = int(self.server.server_address[1])
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.collector.close()


class ExporterError(Exception):
    code = 2


def prometheus_view(addr: str) -> Callable[[Path, Callable[[str, str], None], Any], Callable[[], None]]:
    """``--prometheus ADDR`` on a recording command: once the session file exists, serve it (GPU readings from the
    recording's live state); a port that cannot be had is said (and noted in the session) and the recording goes
    on without the endpoint."""

    def start(path: Path, note: Callable[[str, str], None], live: Any = None) -> Callable[[], None]:
        try:
            exporter = Exporter(path, addr, live=live).start()
        except ExporterError as exc:
            print(f"effmon: {exc}; recording goes on without the exporter", file=sys.stderr)
            note("warning", f"Prometheus exporter not started: {exc}")
            return lambda: None
        print(f"effmon: Prometheus metrics at {exporter.url}", file=sys.stderr)
        note("info", f"Prometheus metrics served at {exporter.url}")
        return exporter.stop

    return start


def check_addr(addr: str) -> str:
    """argparse type for ``--prometheus``: a bad address is a usage error before anything starts."""
    import argparse

    try:
        parse_addr(addr)
    except ExporterError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--prometheus {addr!r}: ")) from None
    return addr


def parse_addr(addr: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[V6]:PORT``; the host is 127.0.0.1 unless given (listening elsewhere is a
    choice the user makes out loud)."""
    text = str(addr).strip()
    host, _, port_text = text.rpartition(":") if ":" in text else ("", "", text)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ExporterError(f"--prometheus {addr!r}: give PORT or HOST:PORT, e.g. 127.0.0.1:9400") from None
    if not 0 <= port <= 65535:
        raise ExporterError(f"--prometheus {addr!r}: the port must be 0-65535 (0 picks a free one)")
    return host, port
