"""``effmon report`` and ``effmon sessions show``: terminal summaries and exports."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from effmon.fmt import human_bytes, human_duration, human_energy, num, timestamp


def _load(args: Any) -> tuple[Any, dict[str, Any]]:
    from effmon.metrics import compute, resolve_window
    from effmon.sessions import resolve
    from effmon.store import SessionReader

    reader = SessionReader(resolve(args.session))
    window = resolve_window(reader, args.window, args.phase)
    if args.format == "csv":  # a time series export: no metrics to compute
        return reader, {
            "window": {
                "start": window.start,
                "end": window.end,
                "label": window.label,
                "relative_s": window.relative(),
            },
            "session": reader.meta(),
        }
    baseline_precision = args.baseline_precision
    if args.baseline:
        with SessionReader(resolve(args.baseline)) as base:
            baseline_precision = baseline_precision or base.meta().get("precision")
    summary = compute(
        reader,
        window,
        params=args.params,
        precision=args.precision,
        perf=args.perf,
        baseline_precision=baseline_precision,
        baseline_perf=args.baseline_perf,
        with_series=args.format in ("efficientllm", "json", "md", "html"),
    )
    return reader, summary


def cmd_report(args: Any) -> int:
    from effmon.metrics import MetricsError
    from effmon.report import formats

    if args.format in ("md", "html") and not args.output:
        print(f"effmon: error: --format {args.format} writes a file: give -o report.{args.format}", file=sys.stderr)
        return 2
    if args.output:
        out_dir = Path(args.output).expanduser().resolve().parent
        if not out_dir.is_dir():
            print(
                f"effmon: error: cannot write {args.output}: directory {out_dir} does not exist; create it first",
                file=sys.stderr,
            )
            return 2
    try:
        reader, summary = _load(args)
    except MetricsError as exc:
        print(f"effmon: error: {exc}", file=sys.stderr)
        return 2
    with reader:
        if args.format in ("md", "html"):
            from effmon.report.document import write

            out = write(reader, summary, args.format, Path(args.output))
            print(f"effmon: wrote {args.format} report of {summary['session']['name']} to {out}", file=sys.stderr)
            return 0
        if args.format == "table":
            from rich.console import Console

            console = Console(file=open(args.output, "w", encoding="utf-8") if args.output else None)
            render_summary(console, reader.meta(), summary)
            return 0
        if args.format == "csv":
            text = formats.csv_text(reader, summary)
        else:
            obj = {
                "efficientllm": formats.efficientllm,
                "efficientllm-pretrain": formats.efficientllm_pretrain,
                "json": formats.effmon_json,
            }[args.format](summary)
            # The C encoder runs only without indent: compact for files, indented on a terminal.
            pretty = not args.output and sys.stdout.isatty()
            text = json.dumps(obj, indent=2 if pretty else None, allow_nan=False) + "\n"
    if args.output:
        tmp = Path(f"{args.output}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(args.output)
        print(
            f"effmon: wrote {args.format} report of {summary['session']['name']} ({summary['window']['label']}) "
            f"to {args.output}",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return 0


def render_summary(
    console: Any, meta: dict[str, Any], s: dict[str, Any] | None, entry: Any = None, metrics_error: str | None = None
) -> None:
    from rich.table import Table

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    cmd = " ".join(meta.get("command") or [])
    gpus = meta.get("gpus") or []
    head.add_row("session", str(meta.get("name")))
    head.add_row("command", cmd or "-")
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
    console.print(head)
    if s is None:
        if metrics_error:
            console.print(f"[yellow]metrics: {metrics_error}[/]")
        return
    t = Table(
        title=f"EfficientLLM metrics — {s['window']['label']} ({human_duration(s['window']['duration_s'])})",
        title_justify="left",
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("unit / source")
    t.add_row(
        "AMU",
        num(s["AMU"]["gib"], ".2f"),
        f"GiB, summed over GPUs ({num((s['AMU']['fraction'] or 0) * 100, '.1f')}% of total)",
    )
    t.add_row("PCU", num(s["PCU"]["value"], ".3f"), f"ratio, from {s['PCU']['source']}")
    if s["PCU"]["tensor_active"] is not None:
        t.add_row("  tensor active", num(s["PCU"]["tensor_active"], ".3f"), "ratio, NVML GPM")
    if s["PCU"]["nvml_utilization"] is not None and s["PCU"]["source"] != "nvml_utilization_gpu":
        t.add_row(
            "  NVML util", num(s["PCU"]["nvml_utilization"], ".3f"), "ratio (any kernel running — not SM activity)"
        )
    al_unit = "s/step" if s["run_kind"] == "training" else "s/request"
    t.add_row("AL", num(s["AL"]["value"], ".4g"), al_unit)
    for key, unit in (("TT", "tokens/param/s"), ("ST", "samples/param/s"), ("IT", "generated tokens/s")):
        if s[key] is not None:
            t.add_row(key, num(s[key], ".4g"), unit)
    t.add_row("AEC", num(s["AEC"]["watts"], ".1f"), "W (average power, all GPUs)")
    t.add_row(
        "energy",
        human_energy(s["AEC"]["energy_j"]),
        f"counter {human_energy(s['AEC']['energy_counter_j'])}, "
        f"integrated {human_energy(s['AEC']['energy_integrated_j'])}",
    )
    for key, label in (
        ("token_j", "J/token"),
        ("sample_j", "J/sample"),
        ("request_j", "J/request"),
        ("generated_token_j", "J/generated token (server)"),
    ):
        if s["energy_per"][key] is not None:
            t.add_row(f"  {label}", num(s["energy_per"][key], ".4g"), "J")
    t.add_row(
        "MCR",
        num(s["MCR"]["value"], ".4f"),
        s["MCR"].get("reason") or f"{s['MCR'].get('baseline_precision')} → {s['MCR'].get('precision')}",
    )
    if s["MFU"]["value"] is not None:
        t.add_row("MFU", num(s["MFU"]["value"], ".3f"), s["MFU"]["formula"])
    console.print(t)
    if s["gpus"]:
        g = Table(title="Per GPU", title_justify="left")
        g.add_column("")
        for gpu in s["gpus"]:
            g.add_column(f"GPU {gpu['index']}", justify="right")
        per_gpu_rows = (
            (
                "memory avg / max",
                lambda x: f"{human_bytes(x['mem_used_avg_bytes'])} / {human_bytes(x['mem_used_max_bytes'])}",
            ),
            ("PCU", lambda x: f"{num(x['pcu'], '.3f')} ({x['pcu_source'] or 'N/A'})"),
            (
                "SM active / tensor (GPM)",
                lambda x: f"{num(x['sm_active_avg_pct'], '.1f', '%')} / {num(x['tensor_active_avg_pct'], '.1f', '%')}",
            ),
            ("NVML utilisation", lambda x: num(x["util_gpu_avg_pct"], ".1f", "%")),
            (
                "power avg / max / limit",
                lambda x: (
                    f"{num(x['power_avg_w'], '.0f')} / {num(x['power_max_w'], '.0f')} / "
                    f"{num(x['power_limit_w'], '.0f')} W"
                ),
            ),
            (
                "energy counter / integrated",
                lambda x: f"{human_energy(x['energy_counter_j'])} / {human_energy(x['energy_integrated_j'])}",
            ),
            (
                "SM clock avg / max",
                lambda x: f"{num(x['sm_clock_avg_mhz'], '.0f')} / {num(x['sm_clock_max_mhz'], '.0f')} MHz",
            ),
            ("temperature max", lambda x: num(x["temp_max_c"], ".0f", "°C")),
            (
                "throttled",
                lambda x: (
                    "N/A"
                    if x["throttle_s"] is None
                    else f"{x['throttle_s']:.1f} s {','.join(x['throttle_reasons_seen'] or [])}"
                ),
            ),
        )
        for label, fn in per_gpu_rows:
            g.add_row(label, *(fn(gpu) for gpu in s["gpus"]))
        console.print(g)
    if s["training"]:
        tr = s["training"]
        console.print(
            f"training: {tr['steps']} steps, {tr['tokens']} tokens, "
            f"step time p50 {num(tr['step_time_p50_s'], '.3f')} s "
            f"p95 {num(tr['step_time_p95_s'], '.3f')} s, {num(tr['tokens_per_s'], '.0f')} tokens/s"
        )
    if s["inference"]:
        inf = s["inference"]
        console.print(
            f"inference: {inf['requests']} requests, {inf['generated_tokens']} generated tokens, "
            f"latency p50 {num(inf['latency_p50_s'], '.3f')} s p99 {num(inf['latency_p99_s'], '.3f')} s"
        )
    for note in s["notes"]:
        console.print(f"[dim]note: {note}[/]")


def print_summary(path: Path) -> None:
    from rich.console import Console

    from effmon.metrics import MetricsError, compute
    from effmon.sessions import entry
    from effmon.store import SessionReader

    console = Console()
    e = entry(path)
    if e.error:
        console.print(f"[red]{e.error}[/]")
        raise SystemExit(2)
    with SessionReader(path) as reader:
        meta = reader.meta()
        try:
            summary = compute(reader, with_series=False)
            error = None
        except MetricsError as exc:
            summary, error = None, str(exc)
        render_summary(console, meta, summary, e, error)
        phases = reader.dicts("phase")
        if phases:
            s0 = e.start or 0
            console.print(
                "phases: "
                + ", ".join(f"{p['name']} ({max(0.0, p['t_start'] - s0):.0f}–{p['t_end'] - s0:.0f} s)" for p in phases)
            )
        for _t, level, text in reader.notices():
            console.print(f"[yellow]{level}: {text}[/]")
        failed = [st for st in reader.source_status() if st.get("failures")]
        for st in failed:
            console.print(
                f"[yellow]source {st['source']}.{st['channel']}: {st['failures']} failures, last: {st['last_error']}[/]"
            )
    if meta.get("status") == "recording" and e.state == "crashed":
        console.print(
            "[yellow]the recorder stopped without closing this session (killed?); "
            "it holds what was written up to then[/]"
        )
