"""What the dashboard shows at a moment of a session: a snapshot built from the session file.

No Textual here: the TUI is a thin view over ``SessionView.snapshot``, which reads the SQLite
session (live or finished) with its own connection. The efficiency numbers come from
``effmon.metrics.compute``, the same code as ``effmon report``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effmon.metrics.engine import THROTTLE_BITS, ComputeCache, MetricsError, Window, compute
from effmon.metrics.series import percentile
from effmon.store import SessionReader

WINDOWS = ((60.0, "1 min"), (600.0, "10 min"), (3600.0, "1 h"), (None, "whole session"))
CHART_METRICS = (
    ("gpu", "power_w", "power", "W"),
    ("gpu", "mem_used_bytes", "memory used", "B"),
    ("gpu_gpm", "sm_active_pct", "SM activity (GPM)", "%"),
    ("gpu_gpm", "tensor_active_pct", "tensor activity (GPM)", "%"),
    ("gpu", "util_gpu_pct", "NVML utilisation", "%"),
    ("gpu", "sm_clock_mhz", "SM clock", "MHz"),
    ("gpu", "temp_c", "temperature", "°C"),
)
STALE_AFTER_S = 3.0
RATE_SPAN_S = 10.0


@dataclass
class GpuCard:
    index: int
    name: str
    mem_used: float | None = None
    mem_total: float | None = None
    util_gpu: float | None = None
    sm_active: float | None = None
    tensor_active: float | None = None
    power: float | None = None
    power_limit: float | None = None
    energy_j: float | None = None
    sm_clock: float | None = None
    temp: float | None = None
    throttle: list[str] = field(default_factory=list)
    mem_series: list[float] = field(default_factory=list)
    power_series: list[float] = field(default_factory=list)
    stale: bool = False
    gpm_supported: bool = True


@dataclass
class Snapshot:
    t: float
    session_start: float
    session_end: float
    name: str
    host: str
    state: str
    window_label: str
    gpus: list[GpuCard]
    throughput: list[tuple[str, str]]
    latency: list[tuple[str, str]]
    efficiency: dict[str, Any] | None
    efficiency_error: str | None
    processes: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    notices: list[str]
    host_line: str
    chart: dict[str, Any]
    watched_pids: list[int]


def _fmt(x: float | None, spec: str, unit: str = "") -> str:
    return "N/A" if x is None else f"{x:{spec}}{unit}"


class SessionView:
    def __init__(self, path: Path | str, efficiency_every_s: float = 5.0):
        self.path = Path(path)
        self.reader = SessionReader(self.path)
        self.efficiency_every_s = efficiency_every_s
        self._eff_cache: tuple[float, float, dict[str, Any] | None, str | None] | None = None
        self._compute_cache = ComputeCache()
        self._cache_end = 0.0

    def close(self) -> None:
        self.reader.close()

    def time_range(self) -> tuple[float | None, float | None]:
        return self.reader.time_range()

    def _latest(self, entity: str, t: float, key: str = "gpu") -> dict[int, dict[str, Any]]:
        """The newest row per instance at or before ``t`` (a short look-back first: it is the common case)."""
        if not self.reader.has(entity):
            return {}
        out: dict[int, dict[str, Any]] = {}
        for lookback in (2.0, 30.0):
            rows = self.reader.dicts(entity, "t <= ? AND t > ? ORDER BY t", (t, t - lookback))
            out = {r[key]: r for r in rows}
            if out:
                break
        return out

    def snapshot(
        self,
        t: float | None = None,
        window_s: float | None = 600.0,
        window_label: str = "10 min",
        chart_metric: int = 0,
        chart_gpu: int = 0,
        proc_filter: str = "",
        live: bool = False,
        efficiency: bool = True,
        chart_width: int = 120,
        throttle: bool = False,
        sparklines: bool = True,
    ) -> Snapshot:
        """``throttle``: recompute the running metrics at most every few seconds (live or playing)."""
        r = self.reader
        meta = r.meta()
        lo, hi = r.time_range()
        if lo is None or hi is None:
            lo = hi = meta.get("started_at") or time.time()
        t = hi if t is None else min(max(t, lo), hi)
        w0 = lo if window_s is None else max(lo, t - window_s)
        gpu_meta = {g.get("index"): g for g in meta.get("gpus") or []}
        unsupported = meta.get("unsupported") or {}
        latest = self._latest("gpu", t)
        gpm = self._latest("gpu_gpm", t)
        energy = self._latest("gpu_energy", t)
        cards = []
        card_series = self._bucketed_all("gpu", ("mem_used_bytes", "power_w"), w0, t, 240) if sparklines else {}
        for idx in sorted(set(latest) | set(gpu_meta)):
            g = latest.get(idx, {})
            a = gpm.get(idx, {})
            e = energy.get(idx, {})
            info = gpu_meta.get(idx, {})
            card = GpuCard(index=int(idx), name=str(info.get("name") or f"GPU {idx}"))
            card.gpm_supported = not any(
                k.startswith("gpu_gpm.*") and (k.endswith(f"@{idx}") or "@" not in k) for k in unsupported
            )
            if g:
                card.stale = (t - g["t"]) > STALE_AFTER_S
                card.mem_used, card.mem_total = (
                    g.get("mem_used_bytes"),
                    g.get("mem_total_bytes") or info.get("mem_total_bytes"),
                )
                card.util_gpu, card.power = g.get("util_gpu_pct"), g.get("power_w")
                card.power_limit = g.get("power_limit_w") or info.get("power_limit_w")
                card.sm_clock, card.temp = g.get("sm_clock_mhz"), g.get("temp_c")
                reasons = g.get("clock_event_reasons") or 0
                card.throttle = [name for bit, name in THROTTLE_BITS.items() if reasons & bit]
            else:
                card.stale = True
            card.sm_active, card.tensor_active = a.get("sm_active_pct"), a.get("tensor_active_pct")
            card.energy_j = e.get("energy_counter_delta_j")
            if card.energy_j is None:
                card.energy_j = e.get("energy_integrated_j")
            series = card_series.get(idx, [])
            card.mem_series = [float(x[0] or 0) for x in series]
            card.power_series = [float(x[1] or 0) for x in series]
            cards.append(card)

        steps = r.dicts("train_step", "t_end <= ? AND t_end >= ?", (t, w0)) if r.has("train_step") else []
        recent_steps = [s for s in steps if s["t_end"] > t - RATE_SPAN_S]
        requests = r.dicts("request", "t_end <= ? AND t_end >= ?", (t, w0)) if r.has("request") else []
        recent_reqs = [q for q in requests if q["t_end"] > t - RATE_SPAN_S * 3]
        throughput: list[tuple[str, str]] = []
        latency: list[tuple[str, str]] = []
        if steps:
            span = RATE_SPAN_S
            throughput += [
                ("tokens/s", _fmt(sum(s["tokens"] or 0 for s in recent_steps) / span, ",.0f")),
                ("samples/s", _fmt(sum(s["samples"] or 0 for s in recent_steps) / span, ".1f")),
                ("steps/s", _fmt(len(recent_steps) / span, ".2f")),
            ]
            times = [s["t_end"] - s["t_start"] for s in steps]
            latency += [
                ("step p50", _fmt(percentile(times, 50), ".3f", " s")),
                ("step p95", _fmt(percentile(times, 95), ".3f", " s")),
                ("last loss", _fmt(steps[-1].get("loss"), ".4g")),
            ]
        if requests:
            span = RATE_SPAN_S * 3
            gen = sum((q["generated_tokens"] or 0) * (q["requests"] or 1) for q in recent_reqs)
            throughput += [
                ("gen tokens/s", _fmt(gen / span, ",.0f")),
                ("requests/s", _fmt(sum(q["requests"] or 1 for q in recent_reqs) / span, ".2f")),
            ]
            e2e: list[float] = []
            ttft: list[float] = []
            for q in requests:
                n = int(q["requests"] or 1)
                e2e += [q["t_end"] - q["t_start"]] * n
                if q.get("ttft_s") is not None:
                    ttft += [q["ttft_s"]] * n
            for label, vals in (("TTFT p50/95/99", ttft), ("E2E p50/95/99", e2e)):
                latency.append(
                    (label, "/".join(_fmt(percentile(vals, p), ".3g") for p in (50, 95, 99)) + " s" if vals else "N/A")
                )

        serving = self._latest("serving", t, key="t") if r.has("serving") else {}
        if serving:
            sv = serving[max(serving)]
            throughput += [
                ("gen tokens/s (server)", _fmt(sv.get("generation_tokens_per_s"), ",.0f")),
                ("prompt tokens/s", _fmt(sv.get("prompt_tokens_per_s"), ",.0f")),
                ("running / waiting", f"{_fmt(sv.get('running'), '.0f')} / {_fmt(sv.get('waiting'), '.0f')}"),
                ("KV cache", _fmt(sv.get("kv_cache_usage_pct"), ".1f", "%")),
            ]
            for key, label in (("ttft", "TTFT"), ("itl", "ITL"), ("e2e", "E2E")):
                quantiles = [sv.get(f"{key}_p{q}_s") for q in (50, 95, 99)]
                text = (
                    "N/A" if all(v is None for v in quantiles) else "/".join(_fmt(v, ".3g") for v in quantiles) + " s"
                )
                latency.append((f"{label} p50/95/99 (server)", text))
        eff, eff_err = self._efficiency(lo, t, live or throttle) if efficiency else (None, None)
        sources = r.source_status()
        notices = [text for _, level, text in r.notices()]
        procs = self._processes(t, proc_filter, live, meta)
        host = self._latest("host", t, key="t")
        host_line = ""
        if host:
            h = host[max(host)]
            host_line = (
                f"host CPU {_fmt(h.get('cpu_pct'), '.0f', '%')}  memory "
                f"{_fmt((h.get('mem_used_bytes') or 0) / 1e9, '.1f')}/"
                f"{_fmt((h.get('mem_total_bytes') or 0) / 1e9, '.1f')} GB"
            )
        state = meta.get("status") or "unknown"
        if state == "recording":
            state = "recording" if live or (time.time() - (meta.get("wall_started_at") or 0)) < 1e9 else state
        return Snapshot(
            t=t,
            session_start=lo,
            session_end=hi,
            name=str(meta.get("name")),
            host=(
                f"replay of {Path((meta.get('replay') or {}).get('path', 'trace')).name}"
                if meta.get("mode") == "replay"
                else str((meta.get("host") or {}).get("hostname", ""))
            ),
            state=state,
            window_label=window_label,
            gpus=cards,
            throughput=throughput,
            latency=latency,
            efficiency=eff,
            efficiency_error=eff_err,
            processes=procs,
            sources=sources,
            notices=notices,
            host_line=host_line,
            chart=self._chart(chart_metric, chart_gpu, w0, t, chart_width),
            watched_pids=list(meta.get("watched_pids") or []),
        )

    def _efficiency(self, lo: float, t: float, live: bool) -> tuple[dict[str, Any] | None, str | None]:
        """Running EfficientLLM metrics of the session so far (cached; recomputed every few seconds)."""
        now = time.monotonic()
        if self._eff_cache and self._eff_cache[1] == t:
            return self._eff_cache[2], self._eff_cache[3]
        if self._eff_cache and live and now - self._eff_cache[0] < self.efficiency_every_s:
            return self._eff_cache[2], self._eff_cache[3]
        try:
            if t - lo <= 0:
                raise MetricsError("not enough data yet")
            if t < self._cache_end:  # the cursor went back: integrals cached past it do not apply
                self._compute_cache = ComputeCache()
            self._cache_end = t
            s = compute(self.reader, Window(lo, t, "so far", lo, t), with_series=False, cache=self._compute_cache)
            result: tuple[dict[str, Any] | None, str | None] = (s, None)
        except MetricsError as exc:
            result = (None, str(exc))
        self._eff_cache = (now, t, result[0], result[1])
        return result

    def _processes(self, t: float, text: str, live: bool, meta: dict[str, Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        if self.reader.has("gpu_process"):
            latest_t = self.reader.db.execute("SELECT MAX(t) FROM s_gpu_process WHERE t <= ?", (t,)).fetchone()[0]
            if latest_t is not None and t - latest_t < STALE_AFTER_S * 2:
                for p in self.reader.dicts("gpu_process", "t = ?", (latest_t,)):
                    rows.append(
                        {"pid": p["pid"], "gpu": p["gpu"], "gpu_mem": p["used_mem_bytes"], "sm": p["sm_util_pct"]}
                    )
        watched = {w["pid"]: w for w in self.reader.dicts("watched", "t <= ? AND t > ?", (t, t - STALE_AFTER_S * 2))}
        known = {r["pid"] for r in rows}
        for pid in watched:
            if pid not in known:
                rows.append({"pid": pid, "gpu": None, "gpu_mem": None, "sm": None})
        for row in rows:
            w = watched.get(row["pid"], {})
            row.update(cpu=w.get("cpu_pct"), rss=w.get("rss_bytes"), user="", command="")
            if live:
                _fill_from_psutil(row)
            if not row["command"] and row["pid"] == meta.get("pid"):
                row["command"] = " ".join(meta.get("command") or [])
        if text:
            needle = text.lower()
            rows = [r for r in rows if needle in f"{r['pid']} {r['user']} {r['command']}".lower()]
        return sorted(rows, key=lambda r: (-(r["gpu_mem"] or 0), r["pid"]))

    def _bucketed_all(
        self, entity: str, columns: tuple[str, ...], w0: float, t: float, buckets: int
    ) -> dict[int, list[tuple[Any, ...]]]:
        """Per GPU, at most ``buckets`` points over [w0, t] (each bucket's maximum), in one query."""
        out: dict[int, list[tuple[Any, ...]]] = {}
        if not self.reader.has(entity) or t <= w0:
            return out
        width = (t - w0) / buckets
        cols = ", ".join(f"MAX({c})" for c in columns)
        for row in self.reader.db.execute(
            f"SELECT gpu, {cols} FROM s_{entity} WHERE t >= ? AND t <= ? "
            f"GROUP BY gpu, CAST((t - ?) / ? AS INTEGER) ORDER BY gpu, MIN(t)",
            (w0, t, w0, width),
        ):
            out.setdefault(int(row[0]), []).append(row[1:])
        return out

    def _bucketed(
        self, entity: str, columns: tuple[str, ...], gpu: int, w0: float, t: float, buckets: int
    ) -> list[tuple[Any, ...]]:
        """At most ``buckets`` points over [w0, t]: each bucket's maximum, computed by SQLite."""
        if not self.reader.has(entity) or t <= w0:
            return []
        width = (t - w0) / buckets
        cols = ", ".join(f"MAX({c})" for c in columns)
        return list(
            self.reader.db.execute(
                f"SELECT {cols} FROM s_{entity} WHERE gpu = ? AND t >= ? AND t <= ? "
                f"GROUP BY CAST((t - ?) / ? AS INTEGER) ORDER BY MIN(t)",
                (gpu, w0, t, w0, width),
            )
        )

    def _chart(self, metric: int, gpu: int, w0: float, t: float, width: int) -> dict[str, Any]:
        entity, column, label, unit = CHART_METRICS[metric % len(CHART_METRICS)]
        values = [float(v) for (v,) in self._bucketed(entity, (column,), gpu, w0, t, max(1, width)) if v is not None]
        return {
            "label": label,
            "unit": unit,
            "values": values,
            "gpu": gpu,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "last": values[-1] if values else None,
        }


def _fill_from_psutil(row: dict[str, Any]) -> None:
    import psutil

    try:
        p = psutil.Process(row["pid"])
        with p.oneshot():
            row["user"] = p.username()
            row["command"] = " ".join(p.cmdline()) or p.name()
            if row.get("rss") is None:
                row["rss"] = p.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass
