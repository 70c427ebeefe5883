"""What the dashboard shows at a moment of a session: a snapshot built from the session file.

No Textual here: the TUI is a thin view over ``SessionView.snapshot``, which reads the SQLite
session (live or finished) through the store's typed queries. The efficiency numbers come from
``effmon.metrics.evaluate``, the same code as ``effmon report``, with the incremental aggregation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effmon.core.fmt import GIB, short_command
from effmon.core.redact import redact_argv
from effmon.core.store import SessionReader
from effmon.metrics import METRICS, IncrementalAggregation, MetricsError, Result, Summary, evaluate, so_far
from effmon.metrics.diagnosis import Diagnosis, diagnose
from effmon.metrics.progress import Progress, session_progress
from effmon.metrics.stats import THROTTLE_BITS
from effmon.metrics.summary import evaluate_spans
from effmon.metrics.window import Window
from effmon.tui.buffer import RecentSeries, RecentSpans, bucket_max

WINDOWS = ((60.0, "1 min"), (600.0, "10 min"), (3600.0, "1 h"), (None, "whole session"))


@dataclass(frozen=True)
class ChartMetric:
    entity: str
    column: str
    label: str
    unit: str
    scope: str = "gpu"
    """gpu: one series per GPU; host: the machine's; step: one value per training step."""


CHART_METRICS = (
    ChartMetric("gpu", "power_w", "power", "W"),
    ChartMetric("gpu", "mem_used_bytes", "memory used", "B"),
    ChartMetric("gpu_gpm", "sm_active_pct", "SM activity (GPM)", "%"),
    ChartMetric("gpu_gpm", "tensor_active_pct", "tensor activity (GPM)", "%"),
    ChartMetric("gpu", "util_gpu_pct", "NVML utilisation", "%"),
    ChartMetric("gpu", "sm_clock_mhz", "SM clock", "MHz"),
    ChartMetric("gpu", "temp_c", "temperature", "°C"),
    ChartMetric("train_step", "loss", "loss", "", "step"),
    ChartMetric("train_step", "step_s", "step time", "s", "step"),
    ChartMetric("train_step", "tokens_per_s", "tokens/s (per step, with the time between steps)", "", "step"),
    ChartMetric("train_step", "lr", "learning rate", "", "step"),
    ChartMetric("train_step", "grad_norm", "grad norm", "", "step"),
    ChartMetric("host", "cpu_pct", "host CPU", "%", "host"),
    ChartMetric("host", "mem_used_bytes", "host memory used", "B", "host"),
)
"""What the chart view cycles through (``m``), in this order, skipping what the session has no readings of: a
CPU fine-tune starts at its loss."""
STALE_AFTER_S = 3.0
DIAGNOSIS_S = 60.0
"""The strip's diagnosis reads the last minute: what limits the run now, not over its whole history."""
RATE_SPAN_S = 10.0
REQUEST_RATE_SPAN_S = 30.0
"""The throughput panel's rates are over the last seconds (steps: 10 s; requests, sparser: 30 s), and say so."""
RATE_LABEL = f" · {RATE_SPAN_S:.0f} s"
REQUEST_RATE_LABEL = f" · {REQUEST_RATE_SPAN_S:.0f} s"
STEP_COLUMNS = (
    "t_start", "t_end", "step", "rank", "tokens", "padded_tokens", "samples", "loss", "lr", "grad_norm", "comm_s",
)  # fmt: skip
REQUEST_COLUMNS = ("t_start", "t_end", "requests", "prompt_tokens", "generated_tokens", "ttft_s", "error")
"""What the panels' metrics read of each step and request (kept in memory for the last minutes)."""
PERCENTILES = tuple(f"{name}_p{q}" for name in ("TTFT", "E2E") for q in (50, 95, 99))


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
    throttle: list[str] | None = None
    """Clock-event reasons slowing the GPU; None when they are not recorded (a replay, an older GPU)."""
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
    efficiency: Summary | None
    efficiency_error: str | None
    processes: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    notices: list[str]
    host_line: str
    chart: dict[str, Any]
    watched_pids: list[int]
    alerts: list[str]
    """What went wrong with the readings themselves (a GPU lost, a source that stopped answering)."""
    progress: Progress | None = None
    """How far the training has gone (step N / total, time left); None: no steps."""
    exit_code: int | None = None
    end_reason: str | None = None
    diagnosis: Diagnosis | None = None
    """What limits the run over the view's window (the rule that fired, and the figures it read)."""


def alerts(meta: dict[str, Any], session_start: float) -> list[str]:
    """``GPU 0 lost at t+3.0 s``, ``nvml.fast stopped answering at t+5.2 s``: shown in the dashboard's header."""
    out = [f"GPU {i} lost at t+{t - session_start:.1f} s" for i, t in sorted((meta.get("lost_gpus") or {}).items())]
    for channel, rel in sorted((meta.get("hung") or {}).items()):
        out.append(f"{channel} stopped answering" + (f" at t+{rel:.1f} s" if rel is not None and rel >= 0 else ""))
    return out


def _fmt(x: float | None, spec: str, unit: str = "") -> str:
    return "N/A" if x is None else f"{x:{spec}}{unit}"


def _row(key: str, results: dict[str, Result], window: str = "") -> tuple[str, str]:
    """A panel row of a registry metric: its label (with the window when it is not the view's) and its value."""
    m = METRICS[key]
    value = results[key].value
    return m.label + window, m.format(value) + (f" {m.unit}" if value is not None and m.unit == "s" else "")


class SessionView:
    def __init__(self, path: Path | str, efficiency_every_s: float = 5.0):
        self.path = Path(path)
        self.reader = SessionReader(self.path)
        self.efficiency_every_s = efficiency_every_s
        self._eff_cache: tuple[float, float, Summary | None, str | None] | None = None
        self._aggregation = IncrementalAggregation(self.reader)
        self._cache_end = 0.0
        self._recent = {
            entity: RecentSeries(self.reader, entity, [m.column for m in CHART_METRICS if m.entity == entity])
            for entity in ("gpu", "gpu_gpm", "host")
        }
        self._has: set[str] = set()
        self._why_cache: tuple[float, tuple[float, float], Diagnosis | None] | None = None
        self._spans = {
            "train_step": RecentSpans(self.reader, "train_step", STEP_COLUMNS),
            "request": RecentSpans(self.reader, "request", REQUEST_COLUMNS),
        }

    def close(self) -> None:
        self.reader.close()

    def time_range(self) -> tuple[float | None, float | None]:
        return self.reader.time_range()

    def _latest(self, entity: str, t: float, key: str = "gpu") -> dict[Any, dict[str, Any]]:
        return self.reader.latest(entity, t, key)

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
        throughput: list[tuple[str, str]] = []
        latency: list[tuple[str, str]] = []
        for panel in (self._training_panel, self._request_panel, self._server_panel):
            more_throughput, more_latency = panel(w0, t)
            throughput += more_throughput
            latency += more_latency
        eff, eff_err = self._efficiency(lo, t, live or throttle) if efficiency else (None, None)
        recent = max(w0, t - DIAGNOSIS_S)  # what limits the run now: the last minute (or a shorter view window)
        label = "1 min" if recent == t - DIAGNOSIS_S else window_label
        why = self._diagnosis(Window(recent, t, label, lo, t), live or throttle) if efficiency else None
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
            state=meta.get("status") or "unknown",
            window_label=window_label,
            gpus=self._cards(meta, w0, t, sparklines),
            throughput=throughput,
            latency=latency,
            efficiency=eff,
            efficiency_error=eff_err,
            processes=self._processes(t, proc_filter, live, meta),
            sources=r.source_status(),
            notices=[text for _, level, text in r.notices()],
            host_line=self._host_line(t),
            chart=self._chart(chart_metric, chart_gpu, w0, t, chart_width),
            watched_pids=list(meta.get("watched_pids") or []),
            alerts=alerts(meta, lo),
            progress=session_progress(r, None if t >= hi else t),
            exit_code=meta.get("exit_code"),
            end_reason=meta.get("end_reason"),
            diagnosis=why,
        )

    def _cards(self, meta: dict[str, Any], w0: float, t: float, sparklines: bool) -> list[GpuCard]:
        gpu_meta = {g.get("index"): g for g in meta.get("gpus") or []}
        unsupported = meta.get("unsupported") or {}
        latest = self._latest("gpu", t)
        gpm = self._latest("gpu_gpm", t)
        energy = self._latest("gpu_energy", t)
        series = self._recent["gpu"].envelope(("mem_used_bytes", "power_w"), w0, t, 240) if sparklines else {}
        cards = []
        for idx in sorted(set(latest) | set(gpu_meta)):
            info = gpu_meta.get(idx, {})
            card = GpuCard(index=int(idx), name=str(info.get("name") or f"GPU {idx}"))
            card.gpm_supported = not any(
                k.startswith("gpu_gpm.*") and (k.endswith(f"@{idx}") or "@" not in k) for k in unsupported
            )
            _fill_card(card, latest.get(idx, {}), info, t)
            a, e = gpm.get(idx, {}), energy.get(idx, {})
            card.sm_active, card.tensor_active = a.get("sm_active_pct"), a.get("tensor_active_pct")
            card.energy_j = e.get("energy_counter_delta_j")
            if card.energy_j is None:
                card.energy_j = e.get("energy_integrated_j")
            points = series.get(idx, [])
            card.mem_series = [float(x[0] or 0) for x in points]
            card.power_series = [float(x[1] or 0) for x in points]
            cards.append(card)
        return cards

    def _training_panel(self, w0: float, t: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Rates over the last RATE_SPAN_S, percentiles over the view's window: the registry's declarations, with the
        window in the label (the strip below shows the session so far)."""
        steps = self._spans["train_step"].ended(w0, t)
        if not steps:
            return self._history_panel(t)
        recent = [s._asdict() for s in steps if s.t_end > t - RATE_SPAN_S]
        rates = evaluate_spans(recent, [], ("tokens_per_s", "samples_per_s", "steps_per_s"))
        spread = evaluate_spans([s._asdict() for s in steps], [], ("step_p50", "step_p95"))
        return [_row(key, rates, RATE_LABEL) for key in rates], [
            *(_row(key, spread) for key in spread),
            ("loss", (_fmt(steps[-1].loss, ".4g") + " " + spark([s.loss for s in steps], 14)).rstrip()),
        ]

    def _history_panel(self, t: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """A job effmon attached to: its logged steps as read from its own logs (no step times: they hold none),
        and where they come from."""
        logged = self.logged_steps(t)
        if not logged:
            return [], []
        meta = self.reader.meta()
        source = meta.get("tensorboard") or meta.get("trainer_state") or "the job's logs"
        last = logged[-1]
        name = Path(str(source)).name
        return [
            ("history from", name if len(name) <= 22 else "…" + name[-21:]),
            ("logged steps", f"{len(logged):,} (last: {_fmt(last.get('step'), ',.0f')})"),
        ], [
            ("loss", (_fmt(last.get("loss"), ".4g") + " " + spark([r.get("loss") for r in logged], 14)).rstrip()),
            ("lr · grad norm", f"{_fmt(last.get('lr'), '.3g')} · {_fmt(last.get('grad_norm'), '.3g')}"),
        ]

    def logged_steps(self, t: float) -> list[dict[str, Any]]:
        """The logged steps read from an attached job's own logs up to ``t``, in step order (each step once)."""
        if not self.reader.has_rows("train_log"):
            return []
        rows = [r for r in self.reader.rows("train_log") if r["t"] <= t and r.get("step") is not None]
        return sorted(rows, key=lambda r: r["step"])

    def _request_panel(self, w0: float, t: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        requests = self._spans["request"].ended(w0, t)
        if not requests:
            return [], []
        recent = [q._asdict() for q in requests if q.t_end > t - REQUEST_RATE_SPAN_S]
        rates = evaluate_spans([], recent, ("generated_tokens_per_s", "requests_per_s"))
        got = evaluate_spans([], [q._asdict() for q in requests], PERCENTILES)
        latency = []
        for name in ("TTFT", "E2E"):
            values = [got[f"{name}_p{q}"].value for q in (50, 95, 99)]
            text = "N/A" if values[0] is None else "/".join(_fmt(v, ".3g") for v in values) + " s"
            latency.append((f"{name} p50/95/99", text))
        throughput = [_row(key, rates, REQUEST_RATE_LABEL) for key in rates]
        if recent and rates["generated_tokens_per_s"].value is None:
            throughput[0] = (throughput[0][0], "not counted (no usage or tokenizer)")
        return throughput, latency

    def _server_panel(self, w0: float, t: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        serving = self._latest("serving", t, key="t")
        if not serving:
            return [], []
        sv = serving[max(serving)]
        latency = []
        for key, label in (("ttft", "TTFT"), ("itl", "ITL"), ("e2e", "E2E")):
            quantiles = [sv.get(f"{key}_p{q}_s") for q in (50, 95, 99)]
            text = "N/A" if all(v is None for v in quantiles) else "/".join(_fmt(v, ".3g") for v in quantiles) + " s"
            if sv.get(f"{key}_p99_lo_s") is not None:  # a histogram knows a percentile only to its bucket
                hi = sv.get(f"{key}_p99_hi_s")
                lo = _fmt(sv[f"{key}_p99_lo_s"], ".3g")
                text += f" (p99 in {lo}–{_fmt(hi, '.3g')} s)" if hi is not None else f" (p99 over {lo} s)"
            latency.append((f"{label} p50/95/99 (server)", text))
        engines = sv.get("engines") or 1
        waiting = f"{_fmt(sv.get('running'), '.0f')} / {_fmt(sv.get('waiting'), '.0f')}"
        kv = _fmt(sv.get("kv_cache_usage_pct"), ".1f", "%")
        if engines > 1:  # never summed: the mean, and the fullest engine
            waiting += f" (longest queue {_fmt(sv.get('waiting_max'), '.0f')})"
            kv = f"{kv} mean, {_fmt(sv.get('kv_cache_usage_max_pct'), '.1f', '%')} max of {engines} engines"
        return [
            ("gen tokens/s (server)", _fmt(sv.get("generation_tokens_per_s"), ",.0f")),
            ("prompt tokens/s", _fmt(sv.get("prompt_tokens_per_s"), ",.0f")),
            ("running / waiting", waiting),
            ("KV cache", kv),
        ], latency

    def _host_line(self, t: float) -> str:
        host = self._latest("host", t, key="t")
        if not host:
            return ""
        h = host[max(host)]
        return (
            f"host CPU {_fmt(h.get('cpu_pct'), '.0f', '%')}  memory "
            f"{_fmt((h.get('mem_used_bytes') or 0) / GIB, '.1f')}/"
            f"{_fmt((h.get('mem_total_bytes') or 0) / GIB, '.1f')} GiB"
        )

    def _efficiency(self, lo: float, t: float, live: bool) -> tuple[Summary | None, str | None]:
        """Running EfficientLLM metrics of the session so far (cached; recomputed every few seconds)."""
        now = time.monotonic()
        if self._eff_cache and self._eff_cache[1] == t:
            return self._eff_cache[2], self._eff_cache[3]
        if self._eff_cache and live and now - self._eff_cache[0] < self.efficiency_every_s:
            return self._eff_cache[2], self._eff_cache[3]
        try:
            if t - lo <= 0:
                raise MetricsError("not enough data yet")
            if t < self._cache_end:  # the cursor went back: running sums past it do not apply
                self._aggregation = IncrementalAggregation(self.reader)
            self._cache_end = t
            s = evaluate(self.reader, so_far(lo, t), aggregation=self._aggregation, with_series=False)
            result: tuple[Summary | None, str | None] = (s, None)
        except MetricsError as exc:
            result = (None, str(exc))
        self._eff_cache = (now, t, result[0], result[1])
        return result

    def _diagnosis(self, w: Window, live: bool) -> Diagnosis | None:
        """The diagnosis over the view's window (cached as the strip is: recomputed every few seconds live)."""
        now = time.monotonic()
        key = (w.start, w.end)
        cached = self._why_cache
        if cached and (cached[1] == key or (live and now - cached[0] < self.efficiency_every_s)):
            return cached[2]
        found = None
        if w.end > w.start:
            try:
                s = evaluate(self.reader, w, with_series=False)
                if s.training or s.inference or s.gpus:
                    found = diagnose(s)
            except MetricsError:
                found = None
        self._why_cache = (now, key, found)
        return found

    def _fresh_rows(self, entity: str, t: float) -> list[dict[str, Any]]:
        """An entity's newest rows at ``t``, unless they are stale."""
        newest = self.reader.last_time(entity, t)
        if newest is None or t - newest >= STALE_AFTER_S * 2:
            return []
        return list(self.reader.rows_at(entity, newest))

    def _processes(self, t: float, text: str, live: bool, meta: dict[str, Any]) -> list[dict[str, Any]]:
        rows = [
            {"pid": p["pid"], "gpu": p["gpu"], "gpu_mem": p["used_mem_bytes"], "sm": p["sm_util_pct"]}
            for p in self._fresh_rows("gpu_process", t)
        ]
        # the watched process trees, and in `effmon top` (where nothing is watched) the busiest processes
        cpu_rows = {r["pid"]: r for entity in ("watched", "busiest") for r in self._fresh_rows(entity, t)}
        known = {r["pid"] for r in rows}
        rows += [{"pid": pid, "gpu": None, "gpu_mem": None, "sm": None} for pid in cpu_rows if pid not in known]
        for row in rows:
            _describe(row, cpu_rows.get(row["pid"], {}), live, meta)
        if text:
            needle = text.lower()
            rows = [r for r in rows if needle in f"{r['pid']} {r['user']} {r['command']}".lower()]
        return sorted(rows, key=lambda r: (-(r["gpu_mem"] or 0), -(r["cpu"] or 0), r["pid"]))

    def chart_metrics(self) -> list[ChartMetric]:
        """The chart metrics this session has readings of (once it has some, it keeps them)."""
        for entity in ({m.entity for m in CHART_METRICS} | {"train_log"}) - self._has:
            if self.reader.has_rows(entity):
                self._has.add(entity)
        logged = "train_log" in self._has and "train_step" not in self._has  # an attached job's own logs
        return [
            m for m in CHART_METRICS if m.entity in self._has or (logged and m.column in ("loss", "lr", "grad_norm"))
        ] or list(CHART_METRICS[:1])

    def _chart(self, metric: int, gpu: int, w0: float, t: float, width: int) -> dict[str, Any]:
        available = self.chart_metrics()
        m = available[metric % len(available)]
        if m.scope == "step":
            values, extra = self._step_values(m.column, w0, t, max(1, width))
        else:
            key = gpu if m.scope == "gpu" else 0
            points = self._recent[m.entity].envelope((m.column,), w0, t, max(1, width)).get(key, [])
            values, extra = [float(v) for (v,) in points if v is not None], ""
        return {
            "label": m.label,
            "unit": m.unit,
            "scope": m.scope,
            "start": w0,
            "values": values,
            "gpu": gpu,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "last": values[-1] if values else None,
            "extra": extra,
            "count": len(available),
        }

    def _step_values(self, column: str, w0: float, t: float, width: int) -> tuple[list[float], str]:
        """One value per step of the lowest rank (the bucket's highest when there are more steps than columns),
        and for the loss the last learning rate and grad norm."""
        import numpy as np

        steps = self._spans["train_step"].ended(w0, t)
        if not steps and column in ("loss", "lr", "grad_norm"):  # an attached job: its logged steps
            logged = [float(r[column]) for r in self.logged_steps(t) if r.get(column) is not None]
            return logged[-width:], "from the job's own logs (no step times)"
        if steps:
            rank = min(s.rank or 0 for s in steps)
            steps = [s for s in steps if (s.rank or 0) == rank]
        ends, values = [], []
        previous = None
        for s in steps:
            value = _step_value(s, column, previous)
            previous = s.t_end
            if value is not None:
                ends.append(s.t_end)
                values.append(float(value))
        extra = ""
        if column == "loss" and steps:
            last = steps[-1]
            extra = f"lr {_fmt(last.lr, '.3g')} · grad norm {_fmt(last.grad_norm, '.3g')}"
        if len(values) > width:
            got = bucket_max(np.asarray(ends), np.asarray(values), w0, t, width)
            values = [v for v in got if v is not None]
        return values, extra


BARS = "▁▂▃▄▅▆▇█"


def spark(values: list[Any], width: int) -> str:
    """A text sparkline of the last ``width`` values (None and NaN left out), lowest to highest."""
    got = [float(v) for v in values if v is not None and v == v][-width:]
    if len(got) < 2:
        return ""
    lo, hi = min(got), max(got)
    span = hi - lo
    return "".join(BARS[min(len(BARS) - 1, int((v - lo) / span * len(BARS)))] if span else BARS[0] for v in got)


def _step_value(s: Any, column: str, previous_end: float | None) -> float | None:
    if column == "step_s":
        return float(s.t_end - s.t_start)
    if column == "tokens_per_s":
        since = s.t_end - (previous_end if previous_end is not None else s.t_start)
        return s.tokens / since if s.tokens is not None and since > 0 else None
    value = getattr(s, column)
    return None if value is None or value != value else float(value)


def _describe(row: dict[str, Any], w: dict[str, Any], live: bool, meta: dict[str, Any]) -> None:
    """A process row's CPU, memory, user and command: from the recording, the live system, the session's command
    (redacted as stored). The program without its folder, as nvitop shows it; a preset's job by the preset's name."""
    row.update(cpu=w.get("cpu_pct"), rss=w.get("rss_bytes"), user="", command=w.get("name") or "")
    if live:
        _fill_from_psutil(row)
    launched = (meta.get("launched") or {}).get("pid")
    if row["pid"] in (meta.get("pid"), launched) and meta.get("command"):
        row["command"] = short_command(list(meta["command"]))
        preset = (meta.get("preset") or {}).get("name")
        if preset:
            row["command"] = f"preset {preset}: {row['command']}"


def _fill_card(card: GpuCard, g: dict[str, Any], info: dict[str, Any], t: float) -> None:
    """The every-tick gauges of the newest reading (a card with none is stale)."""
    if not g:
        card.stale = True
        return
    card.stale = (t - g["t"]) > STALE_AFTER_S
    card.mem_used = g.get("mem_used_bytes")
    card.mem_total = g.get("mem_total_bytes") or info.get("mem_total_bytes")
    card.util_gpu, card.power = g.get("util_gpu_pct"), g.get("power_w")
    card.power_limit = g.get("power_limit_w") or info.get("power_limit_w")
    card.sm_clock, card.temp = g.get("sm_clock_mhz"), g.get("temp_c")
    reasons = g.get("clock_event_reasons")
    card.throttle = None if reasons is None else [name for bit, name in THROTTLE_BITS.items() if int(reasons) & bit]


def _fill_from_psutil(row: dict[str, Any]) -> None:
    import psutil

    try:
        p = psutil.Process(row["pid"])
        with p.oneshot():
            row["user"] = p.username()
            row["command"] = short_command(redact_argv(p.cmdline())) or p.name()
            if row.get("rss") is None:
                row["rss"] = p.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass
