"""Terminal summaries: ``effmon report`` (table) and ``effmon sessions show``. Metric rows come from the
metric declarations (label, format, unit / source)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from effmon.core.fmt import human_bytes, human_duration, human_energy, num, timestamp, visible
from effmon.metrics import Summary
from effmon.metrics.stats import GpuStats


def literal(value: Any, style: str = "") -> Any:
    """Shown exactly: no Rich markup parsed, control characters visible (strings come from users and jobs)."""
    from rich.text import Text

    return Text(visible(value), style=style)


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
    """(label, value, unit / source) of every metric the tables show; an N/A says why instead of its unit."""
    return [
        (m.row_label, m.format(r.value), r.reason if r.value is None and r.reason else m.detail_text(s))
        for m, r in s.metrics("table")
    ]


def table_json(meta: dict[str, Any], s: Summary) -> dict[str, Any]:
    """What the table shows, for scripts (``effmon report --json``)."""
    import dataclasses

    return {
        "session": meta.get("name"),
        "window": {
            "label": s.window.label,
            "start": s.window.start,
            "end": s.window.end,
            "duration_s": s.window.duration,
        },
        "run_kind": s.run_kind,
        "metrics": [
            {
                "key": m.key,
                "label": m.label,
                "value": r.value,
                "unit": m.unit,
                "better": m.better,
                "detail": m.detail_text(s) if r.value is not None else None,
                "na_reason": r.reason,
            }
            for m, r in s.metrics("table")
        ],
        "gpus": [dataclasses.asdict(g) for g in s.gpus],
        "notes": s.notes,
    }


def _head(meta: dict[str, Any], entry: Any) -> Any:
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    gpus = meta.get("gpus") or []
    state = entry.state if entry is not None else meta.get("status")
    exit_text = f", exit {meta['exit_code']}" if meta.get("exit_code") is not None else ""
    rows = [
        ("session", str(meta.get("name"))),
        ("command", " ".join(meta.get("command") or []) or "-"),
        ("status", f"{state}{exit_text}" + (f" — {meta['end_reason']}" if meta.get("end_reason") else "")),
        ("started", timestamp(meta.get("wall_started_at"))),
    ]
    if entry is not None:
        rows += [("duration", human_duration(entry.duration)), ("file", f"{entry.path} ({human_bytes(entry.size)})")]
    rows.append(("GPUs", ", ".join(f"{g.get('index')}: {g.get('name')}" for g in gpus) or "none (host only)"))
    if gpus and gpus[0].get("driver"):
        rows.append(("driver", str(gpus[0].get("driver"))))
    for label, value in rows:
        head.add_row(label, literal(value))
    return head


def render_summary(
    console: Any, meta: dict[str, Any], s: Summary | None, entry: Any = None, metrics_error: str | None = None
) -> None:
    from rich.table import Table

    console.print(_head(meta, entry))
    if s is None:
        if metrics_error:
            console.print(literal(f"metrics: {metrics_error}", "yellow"))
        return
    t = Table(
        title=f"EfficientLLM metrics — {s.window.label} ({human_duration(s.window.duration)})",
        title_justify="left",
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("unit / source")
    for label, value, detail in metric_rows(s):
        t.add_row(label, value, literal(detail))
    console.print(t)
    if s.gpus:
        g = Table(title="Per GPU", title_justify="left")
        g.add_column("")
        for gpu in s.gpus:
            g.add_column(f"GPU {gpu.index}", justify="right")
        for label, fn in PER_GPU_ROWS:
            g.add_row(label, *(literal(fn(gpu)) for gpu in s.gpus))
        console.print(g)
    if s.training:
        tr = s.training
        console.print(
            f"training: {tr.steps} steps, {tr.tokens} tokens, "
            f"step time p50 {num(s.value('step_p50'), '.3f')} s "
            f"p95 {num(s.value('step_p95'), '.3f')} s, {num(s.value('tokens_per_s'), '.0f')} tokens/s"
        )
    if s.inference:
        inf = s.inference
        console.print(
            f"inference: {inf.requests} requests, "
            f"{'tokens not counted' if inf.generated_tokens is None else f'{inf.generated_tokens} generated tokens'}, "
            f"latency p50 {num(s.value('E2E_p50'), '.3f')} s p99 {num(s.value('E2E_p99'), '.3f')} s"
        )
    if s.training or s.inference or s.gpus:
        from effmon.metrics.diagnosis import diagnose

        found = diagnose(s)
        console.print(literal(f"diagnosis: {found.line}"))
        console.print(literal(f"  {found.verdict}"))
    for note in s.notes:
        console.print(literal(f"note: {note}", "dim"))


def print_summary(path: Path) -> None:
    from rich.console import Console

    from effmon.core.sessions import entry
    from effmon.core.store import SessionReader
    from effmon.metrics import MetricsError, evaluate

    console = Console(highlight=False)
    e = entry(path)
    if e.error:
        console.print(literal(e.error, "red"))
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
            console.print(literal(phases_line(phases, e.start or 0)))
        for _t, level, text in reader.notices():
            console.print(literal(f"{level}: {text}", "yellow"))
        for st in reader.source_status():
            if st.get("failures"):
                console.print(
                    literal(
                        f"source {st['source']}.{st['channel']}: {st['failures']} failures, last: {st['last_error']}",
                        "yellow",
                    )
                )
    if meta.get("status") == "recording" and e.state == "crashed":
        console.print(
            literal(
                "the recorder stopped without closing this session (killed?); it holds what was written up to then",
                "yellow",
            )
        )
        if e.left_behind is not None:
            console.print(
                literal(
                    f"the job it launched (pid {e.left_behind}) still runs: stop it with effmon stop {e.name}", "red"
                )
            )


PHASES_LISTED = 8
"""More phases than this are summed per kind (a Trainer logs at every step: hundreds of ``log`` phases)."""


def phases_line(phases: list[dict[str, Any]], s0: float) -> str:
    """``phases: warmup (0–12 s), train (12–300 s)``; many: totals per kind, ``log ×300 (4.1 s in all)``. Times are
    from the session's start (a job attached to late has phases from before it: negative)."""
    if len(phases) <= PHASES_LISTED:
        return "phases: " + ", ".join(f"{p['name']} ({p['t_start'] - s0:.0f}–{p['t_end'] - s0:.0f} s)" for p in phases)
    kinds: dict[str, list[float]] = {}
    for p in phases:
        kinds.setdefault(str(p["name"]), []).append(max(0.0, (p["t_end"] or 0) - (p["t_start"] or 0)))
    parts = [
        f"{name} ×{len(spans)} ({sum(spans):.1f} s in all)"
        for name, spans in sorted(kinds.items(), key=lambda kv: -sum(kv[1]))
    ]
    return f"phases ({len(phases)}): " + ", ".join(parts) + "; one phase's figures: effmon report NAME --phase PHASE"
