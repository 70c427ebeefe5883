"""A multi-node job's GPUs from a Prometheus server, as a session: ``effmon report --prometheus URL``.

The server's dcgm-exporter series (from dcgm-exporter itself or effmon's exporter) are read as the raw samples it
stored (a range-vector query, ``FIELD{match}[span]``, each sample at its own scrape's time stamp), turned into the
rows a dcgm-exporter source would have written (the same conversion, ``effmon.sources.dcgm.rows_from``), and
written into a session file; the report is then computed by the same metric registry as any local session. Each
(instance or host, gpu) pair is one GPU of the run. With ``--step``, or when a series holds more samples than a
range query may return, the series are resampled at that step instead (``/api/v1/query_range``); the report says
which resolution it had: the scrape interval's, or the step's.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

from effmon.core.declare import CORE_ENTITIES, Row
from effmon.core.energy import EnergyIntegrator
from effmon.core.scrape import fetch_text, split_credentials
from effmon.core.store import SessionWriter
from effmon.sources.dcgm import ENERGY_FIELD, FREE_FIELD, GPM_FIELDS, GPU_FIELDS, rows_from

FIELDS = (*GPU_FIELDS, *GPM_FIELDS, ENERGY_FIELD, FREE_FIELD)
MAX_POINTS = 10_000
"""Prometheus refuses a range query of more than 11,000 points per series: the step grows to stay under."""
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PrometheusError(Exception):
    code = 2


def parse_range(text: str, now: float | None = None) -> tuple[float, float]:
    """``START:END``, each a Unix time or ``now`` / ``now-15m`` (s, m, h, d)."""
    now = time.time() if now is None else now
    start_text, sep, end_text = text.partition(":")
    if not sep:
        raise PrometheusError(f"--range {text!r}: give START:END, e.g. now-30m:now or 1795419600:1795419700")
    start, end = _when(start_text, now, text), _when(end_text or "now", now, text)
    if not end > start:
        raise PrometheusError(f"--range {text!r}: the end must come after the start")
    return start, end


def _when(text: str, now: float, whole: str) -> float:
    text = text.strip()
    try:
        if text.startswith("now"):
            rest = text[3:].replace(" ", "")
            if not rest:
                return now
            sign = {"-": -1, "+": 1}[rest[0]]
            return now + sign * float(rest[1:-1]) * UNITS[rest[-1]]
        value = float(text)
    except (ValueError, IndexError, KeyError):
        raise PrometheusError(f"--range {whole!r}: {text!r} is not a Unix time or now-15m") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise PrometheusError(f"--range {whole!r}: times must be finite")
    return value


def _api(url: str, path: str, params: dict[str, Any], what: str) -> list[dict[str, Any]]:
    """One call of Prometheus' HTTP API; its ``data.result``, or PrometheusError saying what went wrong."""
    base, headers = split_credentials(url.rstrip("/"))
    endpoint = f"{base}/api/v1/{path}"
    try:
        doc = json.loads(fetch_text(f"{endpoint}?{urllib.parse.urlencode(params)}", headers, timeout=30))
    except ConnectionError as exc:  # said without the query string, which is long and says nothing here
        said = str(exc).replace(f"{endpoint}?{urllib.parse.urlencode(params)}", endpoint)
        raise PrometheusError(f"{said}; is a Prometheus server there? (its API is at :9090/api/v1)") from None
    except ValueError:
        raise PrometheusError(f"{base} did not answer with Prometheus' JSON API") from None
    if doc.get("status") != "success":
        raise PrometheusError(f"Prometheus refused {what!r}: {doc.get('error', doc.get('status'))}")
    return list(doc["data"]["result"])


def query_range(url: str, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    return _api(url, "query_range", {"query": query, "start": start, "end": end, "step": step}, query)


def instant_query(url: str, query: str, at: float) -> list[dict[str, Any]]:
    return _api(url, "query", {"query": query, "time": at}, query)


def gpu_key(metric: dict[str, str]) -> tuple[str, str]:
    """One GPU of a job: its scrape target (or host) and its index there."""
    return (metric.get("instance") or metric.get("Hostname") or "", metric.get("gpu", ""))


def selector(field: str, match: str) -> str:
    match = match.strip()
    if match and not (match.startswith("{") and match.endswith("}")):
        raise PrometheusError(f"--match {match!r}: give label matchers in braces, e.g. '{{job=\"train\"}}'")
    return field + match


Series = dict[tuple[str, str], dict[float, dict[str, float]]]
"""By GPU (host, gpu label): time -> field -> value."""


def _resolution(url: str, match: str, start: float, end: float, span: str, step: float | None) -> float | None:
    """The query step: None (every raw sample) unless a GPU has more than MAX_POINTS samples in the range."""
    if step is not None:
        return max(step, (end - start) / MAX_POINTS)
    counts = instant_query(url, f"count_over_time({selector('DCGM_FI_DEV_POWER_USAGE', match)}{span})", end)
    if max((float(r["value"][1]) for r in counts), default=0.0) > MAX_POINTS:
        return (end - start) / MAX_POINTS
    return None


def _series(
    url: str, match: str, start: float, end: float, span: str, step: float | None
) -> tuple[Series, dict[tuple[str, str], dict[str, str]]]:
    series: Series = defaultdict(lambda: defaultdict(dict))
    labels: dict[tuple[str, str], dict[str, str]] = {}
    for field in FIELDS:
        sel = selector(field, match)
        found = query_range(url, sel, start, end, step) if step else instant_query(url, sel + span, end)
        for result in found:
            metric = result["metric"]
            key = gpu_key(metric)
            labels.setdefault(key, metric)
            for t, value in result["values"]:
                series[key][float(t)][field] = float(value)
    return series, labels


def _write(writer: Any, series: Series, keys: list[tuple[str, str]]) -> list[float]:
    """Every time stamp's readings as rows, 500 time stamps a transaction; returns the time stamps."""
    integrator = EnergyIntegrator()
    times = sorted({t for k in keys for t in series[k]})
    batch: list[Row] = []
    for n, t in enumerate(times, 1):
        rows = rows_from({i: series[k][t] for i, k in enumerate(keys) if t in series[k]}, t)
        integrator.feed(rows)
        batch += rows
        if n % 500 == 0 or n == len(times):
            writer.write(batch)
            batch = []
    writer.set_meta(started_at=times[0], ended_at=times[-1], energy_integrated_j=integrator.totals())
    return times


def session_from_prometheus(
    url: str, match: str, start: float, end: float, path: Path, step: float | None = None
) -> dict[str, Any]:
    """Write the job's GPU series into a new session at ``path``; returns what was found (GPUs, hosts, resolution:
    ``step_s`` None for the raw samples, ``interval_s`` their median spacing)."""
    span = f"[{max(1, round((end - start) * 1000)) + 1}ms]"  # (end - span, end]: every sample from start to end
    step = _resolution(url, match, start, end, span, step)
    series, labels = _series(url, match, start, end, span, step)
    if not series:
        raise PrometheusError(
            f"no dcgm-exporter series ({', '.join(FIELDS[:3])} ...) match {match or 'anything'} between "
            f"{start:.0f} and {end:.0f} at {split_credentials(url)[0]}: check --match and --range (Unix seconds)"
        )
    keys = sorted(series)
    gpus = [
        {
            "index": i,
            "name": labels[k].get("modelName"),
            "uuid": labels[k].get("UUID"),
            "host": k[0],
            "gpu_on_host": k[1],
        }  # fmt: skip
        for i, k in enumerate(keys)
    ]
    meta = {"name": path.stem, "status": "complete", "kind": "prometheus", "gpus": gpus,
            "prometheus": {"url": split_credentials(url)[0], "match": match, "step_s": step, "start": start,
                           "end": end}}  # fmt: skip
    writer = SessionWriter(path, CORE_ENTITIES, meta)
    try:
        times = _write(writer, series, keys)
    finally:
        writer.close()
    gaps = sorted(b - a for k in keys[:8] for a, b in pairwise(sorted(series[k])))
    interval = gaps[len(gaps) // 2] if gaps else None
    return {"gpus": len(keys), "hosts": len({k[0] for k in keys}), "step_s": step, "interval_s": interval,
            "samples": len(times)}  # fmt: skip
