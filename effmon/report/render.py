"""Terminal summaries: ``effmon report`` (table) and ``effmon sessions show``. Metric rows come from the
metric declarations (label, format, unit / source)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from effmon.core.fmt import human_bytes, human_duration, human_energy, num, timestamp
from effmon.metrics import Summary
from effmon.metrics.stats import GpuStats

PER_GPU_ROWS: tuple[tuple[str, Callable[[GpuStats], str]], ...] = (
    ("memory avg / max", lambda x: f"{human_bytes(x.mem_used_avg_bytes)} / {human_bytes(x.mem_used_max_bytes)}"),
    ("PCU", lambda x: f"{num(x.pcu, '.3f')} ({x.pcu_source or 'N/A'})"),
    (
        "SM active / tensor (GPM)",
        lambda x: f"{num(x.sm_active_avg_pct, '.1f', '%')} / {num(x.tensor_active_avg_pct, '.1f', '%')}",
    ),
    ("NVML utilisation", lambda x: num(x.util_gpu_avg_pct, ".1f", "%")),
    (
        "power avg / max / limit",
        lambda x: f"{num(x.power_avg_w, '.0f')} / {num(x.power_max_w, '.0f')} / {num(x.power_limit_w, '.0f')} W",
    ),
    (
        "energy counter / integrated",
        lambda x: f"{human_energy(x.energy_counter_j)} / {human_energy(x.energy_integrated_j)}",
    ),
    ("SM clock avg / max", lambda x: f"{num(x.sm_clock_avg_mhz, '.0f')} / {num(x.sm_clock_max_mhz, '.0f')} MHz"),
    ("temperature max", lambda x: num(x.temp_max_c, ".0f", "°C")),
    (
        "throttled",
        lambda x: "N/A" if x.throttle_s is None else f"{x.throttle_s:.1f} s {','.join(x.throttle_reasons_seen or [])}",
    ),
)


def metric_rows(s: Summary) -> list[tuple[str, str, str]]:
    """(label, value, unit / source) of every metric the tables show."""
    return [(m.table_label or m.label, m.format(r.value), m.detail_text(s)) for m, r in s.metrics("table")]


def _head(meta: dict[str, Any], entry: Any) -> Any:
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    gpus = meta.get("gpus") or []
    head.add_row("session", str(meta.get("name")))
    head.add_row("command", " ".join(meta.get("command") or []) or "-")
    state = entry.state if entry is not None else meta.get("status")
    exit_text = f", exit {meta['exit_code']}" if meta.get("exit_code") is not None else ""
    head.add_row("status", f"{state}{exit_text}" + (f" — {meta['end_reason']}" if meta.get("end_reason") else ""))
    head.add_row("started", timestamp(meta.get("wall_started_at")))
    if entry is not None:
        head.add_row("duration", human_duration(entry.duration))
        head.add_row("file", f"{entry.path} ({human_bytes(entry.size)})")
    head.add_row("GPUs", ", ".join(f"{g.get('index')}: {g.get('name')}" for g in gpus) or "none (host only)")
    if gpus and gpus[0].get("driver"):
        head.add_row("driver", str(gpus[0].get("driver")))
    return head


def render_summary(
    console: Any, meta: dict[str, Any], s: Summary | None, entry: Any = None, metrics_error: str | None = None
) -> None:
    from rich.table import Table

    console.print(_head(meta, entry))
    if s is None:
        if metrics_error:
            console.print(f"[yellow]metrics: {metrics_error}[/]")
        return
    t = Table(
        title=f"EfficientLLM metrics — {s.window.label} ({human_duration(s.window.duration)})",
        title_justify="left",
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("unit / source")
    for row in metric_rows(s):
        t.add_row(*row)
    console.print(t)
    if s.gpus:
        g = Table(title="Per GPU", title_justify="left")
        g.add_column("")
        for gpu in s.gpus:
            g.add_column(f"GPU {gpu.index}", justify="right")
        for label, fn in PER_GPU_ROWS:
            g.add_row(label, *(fn(gpu) for gpu in s.gpus))
        console.print(g)
    if s.training:
        tr = s.training
        console.print(
            f"training: {tr.steps} steps, {tr.tokens} tokens, "
            f"step time p50 {num(tr.step_time_p50_s, '.3f')} s "
            f"p95 {num(tr.step_time_p95_s, '.3f')} s, {num(tr.tokens_per_s, '.0f')} tokens/s"
        )
    if s.inference:
        inf = s.inference
        console.print(
            f"inference: {inf.requests} requests, {inf.generated_tokens} generated tokens, "
            f"latency p50 {num(inf.latency_p50_s, '.3f')} s p99 {num(inf.latency_p99_s, '.3f')} s"
        )
    for note in s.notes:
        console.print(f"[dim]note: {note}[/]")


def print_summary(path: Path) -> None:
    from rich.console import Console

    from effmon.core.sessions import entry
    from effmon.core.store import SessionReader
    from effmon.metrics import MetricsError, evaluate

    console = Console()
    e = entry(path)
    if e.error:
        console.print(f"[red]{e.error}[/]")
        raise SystemExit(2)
    with SessionReader(path) as reader:
        meta = reader.meta()
        try:
            summary: Summary | None = evaluate(reader, with_series=False)
            error = None
        except MetricsError as exc:
            summary, error = None, str(exc)
        render_summary(console, meta, summary, e, error)
        phases = reader.phases()
        if phases:
            s0 = e.start or 0
            console.print(
                "phases: "
                + ", ".join(f"{p['name']} ({max(0.0, p['t_start'] - s0):.0f}–{p['t_end'] - s0:.0f} s)" for p in phases)
            )
        for _t, level, text in reader.notices():
            console.print(f"[yellow]{level}: {text}[/]")
        for st in reader.source_status():
            if st.get("failures"):
                console.print(
                    f"[yellow]source {st['source']}.{st['channel']}: {st['failures']} failures, "
                    f"last: {st['last_error']}[/]"
                )
    if meta.get("status") == "recording" and e.state == "crashed":
        console.print(
            "[yellow]the recorder stopped without closing this session (killed?); "
            "it holds what was written up to then[/]"
        )
