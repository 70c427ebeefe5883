"""Read a vLLM server's Prometheus ``/metrics`` once a second.

The exposition text is parsed by ``prometheus_client``. Metric names changed between vLLM releases:
each reading accepts the current and the deprecated name (``vllm:kv_cache_usage_perc`` /
``vllm:gpu_cache_usage_perc``, ``vllm:inter_token_latency_seconds`` /
``vllm:time_per_output_token_seconds``) and sums over the ``engine`` label (and any other label).
Latency percentiles cover a sliding window: the difference of the histogram buckets between now and
the oldest scrape in the window, interpolated within a bucket as Prometheus' histogram_quantile does.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import deque
from typing import Any

from effmon.core.declare import Row
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


class MetricsFormatError(Exception):
    pass


def parse(text: str) -> tuple[dict[str, float], dict[str, dict[float, float]], list[str]]:
    """Gauges and counters (summed over labels) and histograms (cumulative bucket counts by upper bound).

    Returns also the vLLM families it did not know (they are ignored, and listed for the help view)."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Any] = {}  # name -> prometheus_client Metric
    try:
        for family in text_string_to_metric_families(text):
            families[family.name] = family
    except (ValueError, TypeError, IndexError) as exc:
        raise MetricsFormatError(f"malformed Prometheus exposition text: {exc}") from None
    values: dict[str, float] = {}
    for key, names in {**GAUGES, **COUNTERS}.items():
        for name in names:
            fam = families.get(name) or families.get(name.removesuffix("_total"))
            if fam is None:
                continue
            suffix = "_total" if fam.type == "counter" else ""
            values[key] = sum(s.value for s in fam.samples if s.name in (fam.name + suffix, fam.name))
            break
    hists: dict[str, dict[float, float]] = {}
    for key, names in HISTOGRAMS.items():
        for name in names:
            hist: Any = families.get(name)
            if hist is None or hist.type != "histogram":
                continue
            buckets: dict[float, float] = {}
            for s in hist.samples:
                if s.name == name + "_bucket":
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
            hists[key] = buckets
            break
    known = {n for names in (*GAUGES.values(), *COUNTERS.values(), *HISTOGRAMS.values()) for n in names}
    unknown = sorted(
        n
        for n in families
        if n.startswith("vllm:") and n not in known and not n.endswith("_created") and n + "_total" not in known
    )
    return values, hists, unknown


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile (0..1) from cumulative bucket counts, linear within the bucket (Prometheus rules)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return prev_bound  # the highest finite bound, as histogram_quantile does
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return bounds[-2] if len(bounds) > 1 else None


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``http://user:password@host/metrics`` (a server behind a proxy with basic auth) as the URL without its
    user info (what is stored and shown) and the Authorization header that carries it."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, {}
    info, _, host = parts.netloc.rpartition("@")
    user, _, password = info.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}


class VllmMetricsSource:
    name = "vllm_metrics"

    def __init__(self, options: SourceOptions):
        self.url, self.headers = _split_credentials(str(options.extra.get("metrics_url") or ""))
        self.window_s = float(options.extra.get("window_s", 60.0))
        self.wait_for_server = bool(options.extra.get("wait_for_server", False))
        self.channels = {"scrape": 1.0}
        self.history: deque[tuple[float, dict[str, dict[float, float]]]] = deque()
        self.previous: tuple[float, dict[str, float]] | None = None
        self.unknown: list[str] = []

    def _fetch(self) -> str:
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url, headers=self.headers), timeout=2.0) as resp:
                return resp.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            raise ConnectionError(f"{self.url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None

    def open(self) -> SourceInfo:
        if not self.url:
            raise SourceUnavailable("no --url given")
        if self.wait_for_server:  # effmon serve opens it before the server is up: reads fail until it is
            return SourceInfo(meta={"serving": {"metrics_url": self.url, "window_s": self.window_s}})
        try:
            values, hists, unknown = parse(self._fetch())
        except (ConnectionError, MetricsFormatError) as exc:
            raise SourceUnavailable(f"{exc}; is this a vLLM server? (its metrics are at /metrics)") from None
        if not values and not hists:
            raise SourceUnavailable(f"{self.url} serves no vLLM metrics (vllm:*); is it a vLLM server?")
        notices = [f"unknown vLLM metric families ignored: {', '.join(unknown[:8])}"] if unknown else []
        return SourceInfo(notices=notices, meta={"serving": {"metrics_url": self.url, "window_s": self.window_s}})

    def read(self, channel: str, now: float) -> list[Row]:
        values, hists, self.unknown = parse(self._fetch())
        row: dict[str, Any] = {"t": now}
        row["running"], row["waiting"] = values.get("running"), values.get("waiting")
        kv = values.get("kv_cache_usage")
        row["kv_cache_usage_pct"] = kv * 100.0 if kv is not None else None
        for key in COUNTERS:
            row[key] = values.get(key)
        if self.previous is not None and now > self.previous[0]:
            dt = now - self.previous[0]
            for key, rate in (
                ("prompt_tokens_total", "prompt_tokens_per_s"),
                ("generation_tokens_total", "generation_tokens_per_s"),
            ):
                a, b = self.previous[1].get(key), values.get(key)
                row[rate] = max(0.0, (b - a) / dt) if a is not None and b is not None else None
        self.previous = (now, values)
        self.history.append((now, hists))
        # the baseline is the newest scrape at or before the window's start
        while len(self.history) >= 2 and now - self.history[1][0] >= self.window_s:
            self.history.popleft()
        oldest = self.history[0][1]
        for key in HISTOGRAMS:
            cur, old = hists.get(key, {}), oldest.get(key, {})
            # one scrape alone has nothing to subtract: N/A until there is a window
            window = {le: count - old.get(le, 0.0) for le, count in cur.items()} if len(self.history) > 1 else {}
            for q in (50, 95, 99):
                row[f"{key}_p{q}_s"] = histogram_quantile(q / 100.0, window)
        return [Row("serving", row)]

    def close(self) -> None:
        pass
