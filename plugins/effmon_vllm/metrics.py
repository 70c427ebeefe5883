"""Read a vLLM server's Prometheus ``/metrics`` once a second.

The exposition text is parsed by ``prometheus_client``. Metric names changed between vLLM releases:
each reading accepts the current and the deprecated name (``vllm:kv_cache_usage_perc`` /
``vllm:gpu_cache_usage_perc``, ``vllm:inter_token_latency_seconds`` /
``vllm:time_per_output_token_seconds``). Counters and histograms are summed over the ``engine`` label (and
any other label); gauges are kept per engine (a data-parallel server has one engine per rank): requests
running and waiting add up, KV-cache usage never does (its mean and its fullest engine are shown).
Latency percentiles cover a sliding window: the difference of the histogram buckets between now and the
oldest scrape in the window, interpolated within a bucket as Prometheus' histogram_quantile does, so a
percentile is only known to lie between two bucket bounds: the bounds go into the session's meta
(``serving.buckets``) and are shown beside the figure.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from effmon.core.declare import Row
from effmon.core.scrape import fetch_text, split_credentials
from effmon.plugins import SourceInfo, SourceOptions, SourceUnavailable

GAUGES = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
COUNTERS = {
    "prompt_tokens_total": ("vllm:prompt_tokens",),
    "generation_tokens_total": ("vllm:generation_tokens",),
    "preemptions_total": ("vllm:num_preemptions",),
    "requests_total": ("vllm:request_success",),
}
HISTOGRAMS = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "e2e": ("vllm:e2e_request_latency_seconds",),
}
PHASE_SUMS = {
    # the server's own time in each phase of its requests, summed (a histogram's _sum: a counter in seconds)
    "queue_seconds_total": "vllm:request_queue_time_seconds",
    "prefill_seconds_total": "vllm:request_prefill_time_seconds",
    "decode_seconds_total": "vllm:request_decode_time_seconds",
}


class MetricsFormatError(Exception):
    pass


def parse(
    text: str,
) -> tuple[dict[str, float], dict[str, dict[float, float]], list[str], dict[str, dict[str, float]]]:
    """Counters and gauges summed over labels (the sum of a gauge is for request counts only: KV-cache usage is
    read per engine), histograms (cumulative bucket counts by upper bound), the vLLM families it did not know
    (ignored, and listed for the help view), and the gauges per engine (``engine`` label; "" when none)."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Any] = {}  # name -> prometheus_client Metric
    try:
        for family in text_string_to_metric_families(text):
            families[family.name] = family
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsFormatError(f"malformed Prometheus exposition text: {exc}") from None
    values, engines = _counters_and_gauges(families)
    hists = _histograms(families)
    for key, name in PHASE_SUMS.items():
        fam = families.get(name)
        if fam is not None and fam.type == "histogram":
            values[key] = sum(s.value for s in fam.samples if s.name == name + "_sum")
    return values, hists, _unknown(families), engines


def _counters_and_gauges(families: dict[str, Any]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Each counter and gauge effmon knows (the first of its names the server has), summed over labels; the gauges
    also per engine."""
    values: dict[str, float] = {}
    engines: dict[str, dict[str, float]] = {}
    for key, names in {**GAUGES, **COUNTERS}.items():
        fam = next((f for n in names if (f := families.get(n) or families.get(n.removesuffix("_total")))), None)
        if fam is None:
            continue
        suffix = "_total" if fam.type == "counter" else ""
        samples = [s for s in fam.samples if s.name in (fam.name + suffix, fam.name)]
        values[key] = sum(s.value for s in samples)
        if key in GAUGES:
            for s in samples:
                engine = engines.setdefault(str(s.labels.get("engine", "")), {})
                engine[key] = engine.get(key, 0.0) + s.value
    return values, engines


def _unknown(families: dict[str, Any]) -> list[str]:
    """The vLLM families effmon does not read (listed for the help view)."""
    known = {n for names in (*GAUGES.values(), *COUNTERS.values(), *HISTOGRAMS.values()) for n in names}
    known |= set(PHASE_SUMS.values())
    return sorted(
        n
        for n in families
        if n.startswith("vllm:") and n not in known and not n.endswith("_created") and n + "_total" not in known
    )


def _histograms(families: dict[str, Any]) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts by upper bound, summed over labels, of each histogram effmon knows."""
    hists: dict[str, dict[float, float]] = {}
    for key, names in HISTOGRAMS.items():
        hist: Any = next((families[n] for n in names if n in families and families[n].type == "histogram"), None)
        if hist is None:
            continue
        buckets: dict[float, float] = {}
        for s in hist.samples:
            if s.name == hist.name + "_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
        hists[key] = buckets
    return hists


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile (0..1) from cumulative bucket counts, linear within the bucket (Prometheus rules)."""
    return histogram_bucket(q, buckets)[0]


def histogram_bucket(q: float, buckets: dict[float, float]) -> tuple[float | None, float | None, float | None]:
    """The q-quantile as histogram_quantile gives it, and the bounds of the bucket it lies in (all that the
    histogram knows of it): (value, lower, upper); upper is None above the highest finite bound."""
    if not buckets:
        return None, None, None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None, None, None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return prev_bound, prev_bound, None  # the highest finite bound, as histogram_quantile does
            if count == prev_count:
                return bound, prev_bound, bound
            value = prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
            return value, prev_bound, bound
        prev_bound, prev_count = bound, count
    return (bounds[-2], bounds[-2], None) if len(bounds) > 1 else (None, None, None)


def _engine_row(now: float, name: str, e: dict[str, float]) -> Row:
    kv = e["kv_cache_usage"] * 100.0 if "kv_cache_usage" in e else None
    values = {"t": now, "engine": name, "running": e.get("running"), "waiting": e.get("waiting")}
    return Row("serving_engine", {**values, "kv_cache_usage_pct": kv})


def _across_engines(rows: list[Row]) -> dict[str, Any]:
    """KV-cache use (mean and fullest engine, never summed) and the longest queue, over the engines."""
    kv = [r.values["kv_cache_usage_pct"] for r in rows if r.values["kv_cache_usage_pct"] is not None]
    waiting = [r.values["waiting"] for r in rows if r.values["waiting"] is not None]
    return {
        "kv_cache_usage_pct": sum(kv) / len(kv) if kv else None,
        "kv_cache_usage_max_pct": max(kv) if kv else None,
        "waiting_max": max(waiting) if waiting else None,
        "engines": len(rows) or None,
    }


class VllmMetricsSource:
    name = "vllm_metrics"

    def __init__(self, options: SourceOptions):
        self.url, self.headers = split_credentials(options.metrics_url or "")
        self.window_s = float(options.window_s)
        self.wait_for_server = options.wait_for_server
        self.channels = {"scrape": 1.0}
        self.history: deque[tuple[float, dict[str, dict[float, float]]]] = deque()
        self.previous: tuple[float, dict[str, float]] | None = None
        self.unknown: list[str] = []

    def _fetch(self) -> str:
        return fetch_text(self.url, self.headers)

    def open(self) -> SourceInfo:
        if not self.url:
            raise SourceUnavailable("no --url given")
        if self.wait_for_server:  # effmon serve opens it before the server is up: reads fail until it is
            return SourceInfo(meta={"serving": {"metrics_url": self.url, "window_s": self.window_s}})
        try:
            values, hists, unknown, _ = parse(self._fetch())
        except (ConnectionError, MetricsFormatError) as exc:
            raise SourceUnavailable(f"{exc}; is this a vLLM server? (its metrics are at /metrics)") from None
        if not values and not hists:
            raise SourceUnavailable(f"{self.url} serves no vLLM metrics (vllm:*); is it a vLLM server?")
        notices = [f"unknown vLLM metric families ignored: {', '.join(unknown[:8])}"] if unknown else []
        return SourceInfo(notices=notices, meta={"serving": {"metrics_url": self.url, "window_s": self.window_s}})

    def read(self, channel: str, now: float) -> list[Row]:
        values, hists, self.unknown, engines = parse(self._fetch())
        rows = [_engine_row(now, name, e) for name, e in sorted(engines.items())]
        row: dict[str, Any] = {"t": now, "running": values.get("running"), "waiting": values.get("waiting")}
        row.update(_across_engines(rows))
        for key in (*COUNTERS, *PHASE_SUMS):
            row[key] = values.get(key)
        row.update(self._rates(now, values))
        row.update(self._quantiles(now, hists))
        return [Row("serving", row), *rows]

    def _rates(self, now: float, values: dict[str, float]) -> dict[str, float | None]:
        """Prompt and generated tokens per second since the previous scrape."""
        out: dict[str, float | None] = {}
        if self.previous is not None and now > self.previous[0]:
            dt = now - self.previous[0]
            for key, rate in (
                ("prompt_tokens_total", "prompt_tokens_per_s"),
                ("generation_tokens_total", "generation_tokens_per_s"),
            ):
                a, b = self.previous[1].get(key), values.get(key)
                out[rate] = max(0.0, (b - a) / dt) if a is not None and b is not None else None
        self.previous = (now, values)
        return out

    def _quantiles(self, now: float, hists: dict[str, dict[float, float]]) -> dict[str, float | None]:
        """Each histogram's p50/p95/p99 over the last ``window_s`` (the newest scrape at or before the window's start
        is the baseline), with the bucket each lies in; N/A until there is a window."""
        self.history.append((now, hists))
        while len(self.history) >= 2 and now - self.history[1][0] >= self.window_s:
            self.history.popleft()
        oldest = self.history[0][1]
        out: dict[str, float | None] = {}
        for key in HISTOGRAMS:
            cur, old = hists.get(key, {}), oldest.get(key, {})
            window = {le: count - old.get(le, 0.0) for le, count in cur.items()} if len(self.history) > 1 else {}
            for q in (50, 95, 99):
                value, lo, hi = histogram_bucket(q / 100.0, window)
                out[f"{key}_p{q}_s"] = value
                out[f"{key}_p{q}_lo_s"], out[f"{key}_p{q}_hi_s"] = (lo, hi) if value is not None else (None, None)
        return out

    def close(self) -> None:
        pass
