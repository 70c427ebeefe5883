"""Commands that read what was recorded: ``sessions``, ``report``, ``compare``; and the catalogues:
``sources`` and ``presets``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from effmon.cli.common import Handler, err, formatter

REPORT_FORMATS = ["table", "efficientllm", "efficientllm-pretrain", "json", "csv", "md", "html"]


def register(sub: Any) -> dict[str, Handler]:
    ses = sub.add_parser(
        "sessions",
        help="list recorded sessions, or show one",
        description="List recorded sessions (newest last), or summarise one.",
    )
    ses_sub = ses.add_subparsers(dest="sessions_cmd", metavar="ACTION")
    show = ses_sub.add_parser("show", help="one-screen summary of a session")
    show.add_argument("session", help="name, unique prefix, path, or 'last'")
    path = ses_sub.add_parser("path", help="print the path of a session file")
    path.add_argument("session")

    cmp = sub.add_parser(
        "compare",
        help="compare runs side by side: deltas, ratios, min-max normalisation, radar chart",
        description="Compare sessions or exported JSON files (--format efficientllm / json) against the first.",
    )
    cmp.add_argument(
        "runs", nargs="+", help="sessions (name, prefix, path, 'last') or .json exports; the first is the baseline"
    )
    cmp.add_argument("--format", "-f", choices=["table", "md", "html", "json"], default="table")
    cmp.add_argument("-o", "--output")

    src = sub.add_parser("sources", help="list data sources and the metrics they declare")
    src.add_argument("--metrics", action="store_true", help="also list every metric with unit and meaning")

    pre = sub.add_parser("presets", help="list bundled presets, or show one with its resolved command")
    pre_sub = pre.add_subparsers(dest="presets_cmd", metavar="ACTION")
    pshow = pre_sub.add_parser("show", help="print a preset and the exact command it runs")
    pshow.add_argument("preset")
    pshow.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    rpt = sub.add_parser(
        "report",
        help="summarise a session: terminal table, EfficientLLM JSON, JSON, CSV, Markdown, HTML",
        description="Compute EfficientLLM metrics (AMU, PCU, AL, TT/ST/IT, AEC, MCR) for a session.",
        epilog="examples:\n  effmon report last\n  effmon report last --format efficientllm -o run.json\n"
        "  effmon report last --phase lora_finetune --format json\n"
        "  effmon report int4-run --format efficientllm --precision int4 --perf 0.4361 \\\n"
        "      --baseline-precision bf16 --baseline-perf 0.4719\n\n"
        "--window takes seconds from the session start: 10:60, 30: (from 30 s on), :-5 (all but the last 5 s).",
        formatter_class=formatter(),
    )
    rpt.add_argument("session", help="name, unique prefix, path, or 'last'")
    rpt.add_argument("--format", "-f", default="table", choices=REPORT_FORMATS)
    rpt.add_argument("-o", "--output", help="write to this file (default: standard output)")
    win = rpt.add_mutually_exclusive_group()
    win.add_argument("--window", metavar="START:END", help="only this part of the session, in seconds from its start")
    win.add_argument("--phase", metavar="NAME", help="only this phase of the session")
    mcr = rpt.add_argument_group("compression rate (MCR)")
    mcr.add_argument("--precision", help="precision of this run (bf16, fp16, fp8, int8, int4, awq, gptq, ...)")
    mcr.add_argument("--perf", type=float, help="task performance score of this run")
    mcr.add_argument("--baseline", metavar="SESSION", help="a baseline session (its precision and --baseline-perf)")
    mcr.add_argument("--baseline-precision", help="precision of the baseline (default: bf16)")
    mcr.add_argument("--baseline-perf", type=float, help="task performance score of the baseline")
    rpt.add_argument("--params", type=int, help="model parameter count, when the session does not know it")
    return {
        "sessions": cmd_sessions,
        "compare": cmd_compare,
        "sources": cmd_sources,
        "presets": cmd_presets,
        "report": cmd_report,
    }


def _options(args: argparse.Namespace) -> Any:
    from effmon.core.sessions import resolve
    from effmon.core.store import SessionReader
    from effmon.metrics import Options

    baseline_precision = args.baseline_precision
    if args.baseline:
        with SessionReader(resolve(args.baseline)) as base:
            baseline_precision = baseline_precision or base.meta().get("precision")
    return Options(args.params, args.precision, args.perf, baseline_precision, args.baseline_perf)


def _report_text(reader: Any, args: argparse.Namespace) -> tuple[str, str]:
    """(the report, its label) for the text formats."""
    from effmon.metrics import evaluate, resolve_window
    from effmon.report import formats

    window = resolve_window(reader, args.window, args.phase)
    if args.format == "csv":  # a time series export: no metrics to compute
        return formats.csv_text(reader, window.start, window.end, window.session_start), window.label
    summary = evaluate(reader, window, options=_options(args), with_series=args.format == "efficientllm")
    if args.format == "table":
        import io

        from rich.console import Console

        from effmon.report.render import render_summary

        buf = io.StringIO()
        render_summary(Console(file=buf if args.output else sys.stdout), reader.meta(), summary)
        return buf.getvalue(), window.label
    obj = {
        "efficientllm": formats.efficientllm,
        "efficientllm-pretrain": formats.efficientllm_pretrain,
        "json": formats.effmon_json,
    }[args.format](summary)
    # The C encoder runs only without indent: compact for files, indented on a terminal.
    pretty = not args.output and sys.stdout.isatty()
    return json.dumps(obj, indent=2 if pretty else None, allow_nan=False) + "\n", window.label


def cmd_report(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.core.sessions import resolve
    from effmon.core.store import SessionReader
    from effmon.metrics import MetricsError

    if args.format in ("md", "html") and not args.output:
        return err(f"--format {args.format} writes a file: give -o report.{args.format}", 2)
    if args.output:
        out_dir = Path(args.output).expanduser().resolve().parent
        if not out_dir.is_dir():
            return err(f"cannot write {args.output}: directory {out_dir} does not exist; create it first", 2)
    with SessionReader(resolve(args.session)) as reader:
        name = reader.meta().get("name")
        try:
            if args.format in ("md", "html"):
                from effmon.metrics import ExactAggregation, evaluate, resolve_window
                from effmon.report.document import write

                agg = ExactAggregation(reader)
                window = resolve_window(reader, args.window, args.phase)
                summary = evaluate(reader, window, options=_options(args), aggregation=agg, with_series=False)
                out = write(agg, summary, args.format, Path(args.output))
                print(f"effmon: wrote {args.format} report of {name} to {out}", file=sys.stderr)
                return 0
            text, label = _report_text(reader, args)
        except MetricsError as exc:
            return err(str(exc), 2)
    if args.output:
        tmp = Path(f"{args.output}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(args.output)
        print(f"effmon: wrote {args.format} report of {name} ({label}) to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_sessions(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.core.sessions import list_sessions, resolve

    if args.sessions_cmd == "show":
        from effmon.report.render import print_summary

        print_summary(resolve(args.session))
        return 0
    if args.sessions_cmd == "path":
        print(resolve(args.session))
        return 0
    from rich.console import Console
    from rich.table import Table

    from effmon.core.fmt import human_bytes, human_duration, timestamp
    from effmon.core.paths import sessions_dir

    entries = list_sessions()
    console = Console()
    if not entries:
        console.print(
            f"No sessions in {sessions_dir()} yet. Record one with: [bold]effmon demo[/] "
            "or [bold]effmon record -- python train.py[/]"
        )
        return 0
    table = Table(title=f"Sessions in {sessions_dir()}", title_justify="left")
    for col in ("name", "start", "duration", "command", "GPUs", "status", "size"):
        table.add_column(col, overflow="fold", justify="right" if col in ("duration", "size") else "left")
    for e in entries:
        if e.error:
            table.add_row(e.name, "", "", f"[red]{e.error}[/]", "", "unreadable", human_bytes(e.size))
            continue
        gpus = e.meta.get("gpus") or []
        gpu_text = f"{len(gpus)}× {gpus[0].get('name')}" if gpus else "none"
        status = e.state
        if e.meta.get("exit_code") is not None:
            status += f" (exit {e.meta['exit_code']})"
        cmd = " ".join(e.meta.get("command") or [])
        table.add_row(
            e.name,
            timestamp(e.meta.get("wall_started_at")),
            human_duration(e.duration),
            cmd[:60],
            gpu_text,
            status,
            human_bytes(e.size),
        )
    console.print(table)
    return 0


def cmd_compare(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.report.compare import CompareError, compare, html_doc, load_run, markdown

    try:
        result = compare([load_run(ref) for ref in args.runs])
    except CompareError as exc:
        return err(str(exc), 2)
    if args.format == "json":
        text = json.dumps(result, indent=2)
        if args.output:
            Path(args.output).write_text(text + "\n")
        else:
            print(text)
        return 0
    if args.format in ("md", "html"):
        if not args.output:
            return err(f"--format {args.format} writes a file: give -o compare.{args.format}", 2)
        (markdown if args.format == "md" else html_doc)(result, Path(args.output))
        print(f"effmon: wrote {args.output}", file=sys.stderr)
        return 0
    from rich.console import Console
    from rich.table import Table

    from effmon.report.compare import _cell

    t = Table(title=f"effmon compare (baseline: {result['baseline']})", title_justify="left")
    t.add_column("metric")
    for r in result["runs"]:
        t.add_column(r, justify="right")
    for r in result["runs"][1:]:
        t.add_column(f"ratio {r}", justify="right")
    for m in result["metrics"]:
        t.add_row(
            f"{m['metric']} ({m['unit']})" if m["unit"] else m["metric"],
            *(_cell(v) for v in m["values"]),
            *(_cell(x, ".3f") for x in m["ratio"][1:]),
        )
    Console().print(t)
    return 0


def cmd_sources(args: argparse.Namespace, command: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from effmon.plugins import load_registry

    registry = load_registry()
    console = Console()
    table = Table(title="Data sources (plugins)", title_justify="left")
    for col in ("source", "live", "entities", "description"):
        table.add_column(col)
    for spec in registry.sources.values():
        table.add_row(
            spec.name, "yes" if spec.live else "no", ", ".join(e.name for e in spec.entities), spec.description
        )
    console.print(table)
    for problem in registry.load_errors:
        console.print(f"[red]{problem}[/]")
    if args.metrics:
        mt = Table(title="Metrics", title_justify="left")
        for col in ("entity", "metric", "unit", "kind", "meaning"):
            mt.add_column(col)
        for entity in registry.entities().values():
            for m in entity.metrics:
                mt.add_row(entity.name, m.name, m.unit, m.kind, m.description)
        console.print(mt)
    return 0


def cmd_presets(args: argparse.Namespace, command: list[str]) -> int:
    import shlex

    from rich.console import Console
    from rich.table import Table

    from effmon.presets import PresetError, bundled, load

    console = Console()
    try:
        if args.presets_cmd == "show":
            p = load(args.preset, args.set)
            console.print(f"[bold]{p.name}[/] ({p.path})\n{p.description}")
            for key, value in p.fields.items():
                console.print(f"  {key} = {value!r}")
            console.print("[bold]command:[/] " + shlex.join(p.command()), soft_wrap=True)
            if p.kind == "serve":
                console.print(f"run it with: effmon serve {p.name}   (server at {p.url})")
            return 0
        table = Table(title="Presets (effmon run --preset NAME / effmon serve NAME)", title_justify="left")
        table.add_column("name")
        table.add_column("kind")
        table.add_column("method / precision")
        table.add_column("model")
        for name in sorted(bundled()):
            p = load(name)
            how = p.fields.get("method") if p.kind == "train" else p.fields.get("precision")
            table.add_row(
                name, "effmon run" if p.kind == "train" else "effmon serve", str(how), str(p.fields.get("model"))
            )
        console.print(table)
        return 0
    except PresetError as exc:
        return err(str(exc), 2)
