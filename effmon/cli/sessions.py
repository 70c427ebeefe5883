"""Commands that read what was recorded: ``sessions``, ``report``, ``compare``; and the catalogues:
``sources`` and ``presets``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from effmon.cli.common import Handler, err, formatter, positive
from effmon.core.fmt import visible

REPORT_FORMATS = ["table", "efficientllm", "efficientllm-pretrain", "json", "csv", "md", "html"]


FORCE_HELP = "with -o: also write through a symbolic link or into a device or pipe (refused by default)"


def register(sub: Any) -> dict[str, Handler]:
    ses = sub.add_parser(
        "sessions",
        help="list recorded sessions, or show one",
        description="List recorded sessions (newest last), or summarise one.",
    )
    ses.add_argument("--json", action="store_true", help="print the list as JSON")
    ses_sub = ses.add_subparsers(dest="sessions_cmd", metavar="ACTION")
    show = ses_sub.add_parser("show", help="one-screen summary of a session")
    show.add_argument("session", help="name, unique prefix, path, 'last' or 'last~N' (N before the newest)")
    chk = ses_sub.add_parser(
        "check",
        help="check a session file: what can be read, what is lost (a damaged file)",
        description="Read every row of a session file and say what cannot be read. Reports of a damaged session "
        "use what can be read on their own; --salvage also writes that as a new session, NAME-salvaged.",
    )
    chk.add_argument("session")
    chk.add_argument("--salvage", action="store_true", help="write what can be read into NAME-salvaged")
    path = ses_sub.add_parser("path", help="print the path of a session file")
    path.add_argument("session")

    cmp = sub.add_parser(
        "compare",
        help="compare runs side by side: deltas, ratios, min-max normalisation, radar chart",
        description="Compare sessions or exported JSON files (--format efficientllm / json) against the first.",
    )
    cmp.add_argument(
        "runs",
        nargs="+",
        help="sessions (name, prefix, path, 'last') or .json exports; the first is the baseline. Repeats of one "
        "configuration joined by commas (A1,A2,A3) are compared by their mean, with their spread",
    )
    cmp.add_argument(
        "--perf",
        type=perf_arg,
        metavar="ppl:FILE",
        help="measure each run's score (1/perplexity on the text file, with the weights its session served) and its "
        "MCR against the first: the benchmark's quantization comparison from measured data",
    )
    cmp.add_argument("--format", "-f", choices=["table", "md", "html", "json"], default="table")
    cmp.add_argument("-o", "--output", help="write to this file (md and html need one)")
    cmp.add_argument("--force", action="store_true", help=FORCE_HELP)

    src = sub.add_parser("sources", help="list data sources and the metrics they declare")
    src.add_argument("--metrics", action="store_true", help="also list every metric with unit and meaning")
    src.add_argument("--json", action="store_true", help="print as JSON")

    pre = sub.add_parser("presets", help="list bundled presets, or show one with its resolved command")
    pre.add_argument("--json", action="store_true", help="print the list (or the preset) as JSON")
    pre_sub = pre.add_subparsers(dest="presets_cmd", metavar="ACTION")
    pshow = pre_sub.add_parser("show", help="print a preset and the exact command it runs")
    pshow.add_argument("preset")
    pshow.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    pshow.add_argument("--json", action="store_true", help="print as JSON")

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
    rpt.add_argument(
        "session",
        nargs="*",
        help="name, unique prefix, path, or 'last'; the sessions of a multi-node job (one effmon run per node) are "
        "reported as one run, found beside the one given or all given",
    )
    prom = rpt.add_argument_group("from a Prometheus server (a multi-node job's GPUs, from dcgm-exporter series)")
    prom.add_argument("--prometheus", metavar="URL", help="the server, e.g. http://127.0.0.1:9090 (not a session)")
    prom.add_argument("--match", default="", metavar="SEL", help="label matchers, e.g. '{job=\"train\"}'")
    prom.add_argument("--range", metavar="START:END", help="Unix times or now-30m:now (required with --prometheus)")
    prom.add_argument(
        "--step",
        type=positive,
        metavar="S",
        help="resample at S seconds (default: the samples as scraped; resampled when a series has over 10,000)",
    )
    rpt.add_argument("--format", "-f", default="table", choices=REPORT_FORMATS)
    rpt.add_argument("-o", "--output", help="write to this file (default: standard output)")
    rpt.add_argument("--force", action="store_true", help=FORCE_HELP)
    win = rpt.add_mutually_exclusive_group()
    win.add_argument("--window", metavar="START:END", help="only this part of the session, in seconds from its start")
    win.add_argument("--phase", metavar="NAME", help="only this phase of the session")
    mcr = rpt.add_argument_group("compression rate (MCR)")
    mcr.add_argument("--precision", help="precision of this run (bf16, fp16, fp8, int8, int4, awq, gptq, ...)")
    mcr.add_argument(
        "--perf",
        type=perf_arg,
        metavar="SCORE|ppl:FILE",
        help="task performance score of this run; ppl:FILE measures it: 1/perplexity on the text file, with the "
        "weights the session served (and the --baseline session's)",
    )
    mcr.add_argument("--baseline", metavar="SESSION", help="a baseline session (its precision and --baseline-perf)")
    mcr.add_argument("--baseline-precision", help="precision of the baseline (default: bf16)")
    mcr.add_argument("--baseline-perf", type=float, help="task performance score of the baseline")
    rpt.add_argument("--params", type=int, help="model parameter count, when the session does not know it")
    rpt.add_argument(
        "--tokens",
        choices=("real", "padded"),
        default="real",
        help="what TT counts: real tokens, padding not counted (default), or every padded input position (the "
        "benchmark reference's count); the export says which",
    )
    rpt.add_argument(
        "--json",
        action="store_true",
        help="with --format table: the table's rows as JSON (label, value, unit, N/A reason)",
    )
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
    return Options(
        args.params, args.precision, args.perf, baseline_precision, args.baseline_perf, getattr(args, "tokens", "real")
    )


def _report_text(reader: Any, args: argparse.Namespace) -> tuple[str, str]:
    """(the report, its label) for the text formats."""
    from effmon.metrics import evaluate, resolve_window
    from effmon.report import formats

    window = resolve_window(reader, args.window, args.phase)
    if args.format == "csv":  # a time series export: no metrics to compute
        return formats.csv_text(reader, window.start, window.end, window.session_start), window.label
    summary = evaluate(reader, window, options=_options(args), with_series=args.format == "efficientllm")
    if args.format == "table" and args.json:
        from effmon.report.render import table_json

        return json.dumps(table_json(reader.meta(), summary), indent=2, default=str) + "\n", window.label
    if args.format == "table":
        import io

        from rich.console import Console

        from effmon.report.render import render_summary

        buf = io.StringIO()
        render_summary(Console(file=buf if args.output else sys.stdout, highlight=False), reader.meta(), summary)
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
    from effmon.core.files import check_target
    from effmon.core.sessions import resolve

    if args.format in ("md", "html") and not args.output:
        return err(f"--format {args.format} writes a file: give -o report.{args.format}", 2)
    if args.format in ("md", "html"):
        from effmon.core.extras import need

        need("report", f"effmon report --format {args.format} (its plots)")
    if args.output:
        check_target(args.output, args.force)  # a bad -o is said before the work, not after
    if args.prometheus:
        return _report_from_prometheus(args)
    if not args.session:
        return err("give a session (effmon report last) or a Prometheus server (--prometheus URL --range ...)", 2)
    from effmon.core.jobs import JobError, as_one

    try:
        paths, line = as_one([resolve(ref) for ref in args.session])
    except JobError as exc:
        return err(str(exc), 2)
    if len(paths) > 1:
        return err(
            "give one session (or the sessions of one multi-node job); to set runs side by side: effmon compare A B", 2
        )
    if line:
        print(f"effmon: {line}", file=sys.stderr)
    if isinstance(args.perf, str):  # ppl:FILE: measured, this run's and the baseline's
        bad = _measured_perf(args, paths[0])
        if bad is not None:
            return bad
    return int(readable(paths[0], lambda path: _report(path, args)))


def perf_arg(text: str) -> float | str:
    """``--perf``: a score, or ``ppl:FILE`` (measured)."""
    if text.startswith("ppl:"):
        if not text[4:]:
            raise argparse.ArgumentTypeError("ppl:FILE: give the text file, e.g. ppl:effmon/data/eval-text.txt")
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a score (0.47) or ppl:FILE to measure one") from None


def _measured_perf(args: argparse.Namespace, path: Path) -> int | None:
    """``report --perf ppl:FILE``: this run's score and, from ``--baseline``, the baseline's, both measured."""
    from effmon.core.sessions import resolve
    from effmon.serving.quality import QualityError, session_score

    if not args.baseline:
        return err("--perf ppl:FILE compares with a baseline run: give --baseline SESSION (e.g. the bf16 run)", 2)
    try:
        mine, base = session_score(path, args.perf), session_score(resolve(args.baseline), args.perf)
    except QualityError as exc:
        return err(str(exc), exc.code)
    print(f"effmon: perplexity on {mine['file']} ({mine['tokens']} tokens): this run {mine['perplexity']:.4g}, "
          f"baseline {base['perplexity']:.4g}; score = 1/perplexity", file=sys.stderr)  # fmt: skip
    args.perf, args.baseline_perf = mine["score"], base["score"]
    return None


def _report_from_prometheus(args: argparse.Namespace) -> int:
    """The job's GPU series from Prometheus into a private temporary session, reported like any other."""
    import tempfile

    from effmon.core.redact import redact_text
    from effmon.report.fromprom import PrometheusError, parse_range, session_from_prometheus

    if args.session:
        return err("give either sessions or --prometheus, not both", 2)
    if not args.range:
        return err("--prometheus needs --range START:END (Unix times, or e.g. now-30m:now)", 2)
    try:
        start, end = parse_range(args.range)
        with tempfile.TemporaryDirectory(prefix="effmon-prom-") as tmp:  # 0700: the series stay private
            path = Path(tmp) / "prometheus.effmon"
            found = session_from_prometheus(args.prometheus, args.match, start, end, path, args.step)
            every = f" every {found['interval_s']:g} s" if found["interval_s"] else ""
            resolution = (
                f"resampled at a {found['step_s']:g} s step (no finer than the scrape interval)"
                if found["step_s"]
                else f"the samples as scraped{every}"
            )
            print(
                f"effmon: from {redact_text(args.prometheus)}: {found['gpus']} GPUs on {found['hosts']} hosts, "
                f"{found['samples']} time stamps, {resolution}",
                file=sys.stderr,
            )
            return int(readable(path, lambda p: _report(p, args)))
    except PrometheusError as exc:
        return err(str(exc), exc.code)


def _report(path: Path, args: argparse.Namespace) -> int:
    from effmon.core.files import safe_write
    from effmon.core.store import SessionReader
    from effmon.metrics import MetricsError

    with SessionReader(path) as reader:
        name = reader.meta().get("name")
        try:
            if args.format in ("md", "html"):
                from effmon.metrics import ExactAggregation, evaluate, resolve_window
                from effmon.report.document import write

                agg = ExactAggregation(reader)
                window = resolve_window(reader, args.window, args.phase)
                summary = evaluate(reader, window, options=_options(args), aggregation=agg, with_series=False)
                out = write(agg, summary, args.format, Path(args.output), args.force)
                print(f"effmon: wrote {args.format} report of {name} to {out}", file=sys.stderr)
                return 0
            text, label = _report_text(reader, args)
        except MetricsError as exc:
            return err(str(exc), 2)
    if args.output:
        out = safe_write(args.output, text, args.force)
        print(f"effmon: wrote {args.format} report of {name} ({label}) to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def readable(path: Path, fn: Any) -> Any:
    """``fn(path)``; when the file turns out damaged, ``fn`` of a copy of what can be read (said on stderr,
    and in the copy's notes)."""
    import tempfile

    from effmon.core.salvage import salvage
    from effmon.core.store import StoreDamaged

    try:
        return fn(path)
    except StoreDamaged:
        pass
    with tempfile.TemporaryDirectory(prefix=".effmon-salvage-", dir=path.parent) as tmp:
        copy = Path(tmp) / path.name
        result = salvage(path, copy)
        if result.schema_error:
            raise StoreDamaged(f"session {path.stem} is damaged: {result.schema_error}") from None
        print(
            f"effmon: session {path.stem} is damaged: using what can be read ({result.rows_lost} row(s) lost; "
            f"details: effmon sessions check {path.stem})",
            file=sys.stderr,
        )
        return fn(copy)


def _check(path: Path, write_copy: bool) -> int:
    from effmon.core.salvage import DERIVED, check, salvage

    out = path.with_name(f"{path.stem}-salvaged{path.suffix}")
    if write_copy and out.exists():
        return err(f"{out} exists already; remove it first", 2)
    result = salvage(path, out) if write_copy else check(path)
    if result.schema_error:
        return err(f"session {path.stem} is damaged: {result.schema_error}", 1)
    state = "damaged" if result.damaged else "sound: every row reads"
    print(f"session {path.stem}: {state}")
    for problem in "\n".join(result.problems).splitlines()[:4]:
        print(f"  sqlite: {visible(problem)}")
    for t in result.tables:
        lost = f", {t.rows_lost} unreadable" if t.rows_lost else ""
        if t.rows_lost and t.name in DERIVED:
            lost += " (packed again from the rows)"
        error = f" ({visible(t.error)})" if t.error else ""
        print(f"  {t.name:<16} {t.rows_read} rows read{lost}{error}")
    if write_copy:
        print(f"what can be read is in {out} (session {out.stem}); reports of it note the loss")
    elif result.damaged:
        print(
            f"reports use what can be read (effmon report {path.stem}); a copy: effmon sessions check {path.stem} "
            "--salvage"
        )
    return 1 if result.damaged else 0


def _session_record(e: Any) -> dict[str, Any]:
    gpus = e.meta.get("gpus") or []
    return {
        "name": e.name,
        "path": str(e.path),
        "started_at": e.meta.get("wall_started_at"),
        "duration_s": e.duration,
        "status": e.state if not e.error else "unreadable",
        "left_behind_pid": e.left_behind,
        "exit_code": e.meta.get("exit_code"),
        "end_reason": e.meta.get("end_reason"),
        "progress": _progress_record(e),
        "gpus": [g.get("name") for g in gpus],
        "command": e.meta.get("command") or [],
        "size_bytes": e.size,
        "error": e.error,
    }


def _progress_record(e: Any) -> dict[str, Any] | None:
    if e.error or e.state != "live":
        return None
    done = _live_progress(e)
    return None if done is None else done.to_json()


def _status_text(e: Any) -> str:
    if e.error:
        return "starting" if "being created" in e.error else "damaged" if "damaged" in e.error else "unreadable"
    code = e.meta.get("exit_code")
    left = e.left_behind
    if left is not None:
        return f"crashed: its job {left} still runs (effmon stop {e.name})"
    if e.state == "live":
        done = _live_progress(e)
        return "live" + (f": {done.short()}" if done is not None else "")
    return e.state + (f" (exit {code})" if code is not None else "")


def _live_progress(e: Any) -> Any:
    """A live session's training progress (step N / total, time left), or None."""
    from effmon.core.store import SessionReader, StoreError
    from effmon.metrics.progress import session_progress

    try:
        with SessionReader(e.path) as reader:
            return session_progress(reader)
    except StoreError:
        return None


def _gpu_text(gpus: list[dict[str, Any]]) -> str:
    if not gpus:
        return "none"
    name = str(gpus[0].get("name") or "GPU").replace("NVIDIA ", "")
    return f"{len(gpus)}× {name.split()[0]}"


def cmd_sessions(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.core.sessions import list_sessions, resolve

    if args.sessions_cmd == "show":
        from effmon.report.render import print_summary

        readable(resolve(args.session), print_summary)
        return 0
    if args.sessions_cmd == "check":
        return _check(resolve(args.session), args.salvage)
    if args.sessions_cmd == "path":
        print(resolve(args.session))
        return 0
    from effmon.cli.output import piped, print_json

    entries = list_sessions()
    if args.json:
        return print_json([_session_record(e) for e in entries])
    if piped():
        return _print_session_rows(entries)
    return _print_sessions(entries)


def _print_session_rows(entries: list[Any]) -> int:
    from effmon.cli.output import print_rows
    from effmon.core.fmt import human_bytes, human_duration, timestamp

    return print_rows(
        (
            e.name,
            timestamp(e.meta.get("wall_started_at")),
            human_duration(e.duration),
            _status_text(e),
            _gpu_text(e.meta.get("gpus") or []),
            human_bytes(e.size),
            " ".join(e.meta.get("command") or []) or e.error,
        )
        for e in entries
    )


def _print_sessions(entries: list[Any]) -> int:
    from effmon.cli.output import console, literal
    from effmon.core.fmt import human_bytes, human_duration, timestamp
    from effmon.core.paths import sessions_dir

    out = console()
    if not entries:
        out.print(
            f"No sessions in {sessions_dir()} yet. Record one with: effmon demo or effmon record -- python train.py",
            markup=False,
        )
        return 0
    rows: list[tuple[str, str, str, str, str, str, str, bool]] = [
        (
            e.name,
            timestamp(e.meta.get("wall_started_at"))[5:16],  # MM-DD HH:MM
            human_duration(e.duration),
            _status_text(e),
            _gpu_text(e.meta.get("gpus") or []),
            human_bytes(e.size),
            str(e.error or " ".join(e.meta.get("command") or [])),
            bool(e.error or e.state in ("failed", "crashed")),
        )
        for e in entries
    ]
    out.print(literal(f"Sessions in {sessions_dir()}  (name them by NAME, a unique prefix, last, last~1 ...)"))
    details = max(sum(len(c) + 2 for c in r[1:6]) for r in rows)
    if max(len(r[0]) for r in rows) + details + 20 > out.width:
        _print_stacked(out, rows)  # narrow: the whole name on its own line, the details under it
        return 0
    _print_session_table(out, rows)
    return 0


def _print_session_table(out: Any, rows: list[tuple[str, str, str, str, str, str, str, bool]]) -> None:
    from rich import box
    from rich.table import Table

    from effmon.cli.output import literal

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for i, col in enumerate(("name", "start", "dur", "status", "GPUs", "size")):  # never shrunk: the command is
        width = max(len(col), *(len(str(r[i])) for r in rows))
        table.add_column(col, no_wrap=True, min_width=width, justify="right" if col in ("dur", "size") else "left")
    table.add_column("command", overflow="ellipsis", no_wrap=True, ratio=1)
    for name, start, dur, status, gpus, size, cmd, bad in rows:
        table.add_row(literal(name), start, dur, literal(status, "red" if bad else ""), gpus, size, literal(cmd))
    out.print(table)


def _print_stacked(out: Any, rows: list[tuple[Any, ...]]) -> None:
    from rich.text import Text

    from effmon.cli.output import literal

    for name, start, dur, status, gpus, size, command, bad in rows:
        out.print(literal(name, "bold"))
        line = Text("    ")
        line.append(f"{start}  {dur}  ")
        line.append(literal(status, "red" if bad else ""))
        line.append(f"  {gpus}  {size}  ")
        line.append(literal(command, "dim"))
        line.truncate(out.width, overflow="ellipsis")
        out.print(line, no_wrap=True)


def cmd_compare(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.core.files import check_target, safe_write
    from effmon.report.compare import CompareError, compare, html_doc, load_group, markdown

    if args.format in ("md", "html") and not args.output:
        return err(f"--format {args.format} writes a file: give -o compare.{args.format}", 2)
    if args.output:
        check_target(args.output, args.force)
    try:
        runs = _measured_runs(args.runs, args.perf) if args.perf else [load_group(ref) for ref in args.runs]
        result = compare(runs)
    except CompareError as exc:
        return err(str(exc), 2)
    if args.format == "json":
        text = json.dumps(result, indent=2)
        if args.output:
            safe_write(args.output, text + "\n", args.force)
        else:
            print(text)
        return 0
    if args.format in ("md", "html"):
        from effmon.core.extras import need

        need("report", f"effmon compare --format {args.format} (its radar chart)")
        out = (markdown if args.format == "md" else html_doc)(result, Path(args.output), args.force)
        print(f"effmon: wrote {out}", file=sys.stderr)
        return 0
    _print_compare(result)
    return 0


def _measured_runs(refs: list[str], spec: str) -> list[dict[str, Any]]:
    """``compare --perf ppl:FILE``: each session's score measured with the weights it served; its MCR against the
    first (the baseline's precision and score)."""
    from effmon.core.sessions import resolve
    from effmon.metrics import Options
    from effmon.report.compare import CompareError, load_run
    from effmon.serving.quality import QualityError, session_score

    if not isinstance(spec, str):
        raise CompareError("compare --perf takes ppl:FILE (a score per run is measured, not typed)")
    try:
        scores = [session_score(resolve(ref), spec) for ref in refs]
    except QualityError as exc:
        raise CompareError(str(exc)) from None
    base = scores[0]
    for ref, sc in zip(refs, scores, strict=True):
        print(f"effmon: {ref}: {sc['precision']}, perplexity {sc['perplexity']:.4g} on {sc['file']} "
              f"({sc['tokens']} tokens)", file=sys.stderr)  # fmt: skip
    return [
        load_run(
            ref,
            Options(
                precision=sc["precision"],
                perf=sc["score"],
                baseline_precision=base["precision"],
                baseline_perf=base["score"],
            ),
        )  # fmt: skip
        for ref, sc in zip(refs, scores, strict=True)
    ]


def _print_compare(result: dict[str, Any]) -> None:
    from rich.table import Table

    from effmon.cli.output import console, literal
    from effmon.report.compare import cell

    out = console()
    labels = [chr(ord("A") + i) if i < 26 else str(i + 1) for i in range(len(result["runs"]))]
    for label, run, gpu in zip(labels, result["runs"], result["gpus"], strict=True):  # columns stay narrow
        baseline = " (baseline)" if label == "A" else ""
        out.print(literal(f"{label} = {run}{baseline}, GPUs: {gpu}"))
    t = Table(title="effmon compare: values, and ratios to A", title_justify="left")
    t.add_column("metric")
    for label in labels:
        t.add_column(label, justify="right")
    for label in labels[1:]:
        t.add_column(f"{label}/A", justify="right")
    for m in result["metrics"]:
        t.add_row(
            literal(f"{m['metric']} ({m['unit']})" if m["unit"] else m["metric"]),
            *(
                cell(v) + (f" ±{sp / 2:.0%}" if sp is not None else "")
                for v, sp in zip(m["values"], m["spread"], strict=True)
            ),
            *(cell(x, ".3f") for x in m["ratio"][1:]),
        )
    out.print(t)
    if result["repeats"]:
        out.print("± : half the range of the repeats, relative to their mean")
    if result["not_ranked"]:
        out.print(
            literal(
                "not a ranking: on " + ", ".join(result["not_ranked"]) + " the runs differ less than their repeats do"
            )
        )
    if result["metrics"] and any(m["key"] == "MCR" for m in result["metrics"]):
        out.print("MCR of the baseline is 1 by definition")
    for line in na_reasons(result, labels):
        out.print(literal(line, "dim"))


def na_reasons(result: dict[str, Any], labels: list[str]) -> list[str]:
    """Why each N/A is N/A: one line per run and reason, naming the metrics it holds for."""
    lines = []
    for i, label in enumerate(labels):
        by_reason: dict[str, list[str]] = {}
        for m in result["metrics"]:
            why = (m.get("why") or [None] * len(labels))[i]
            if m["values"][i] is None:
                by_reason.setdefault(why or "not in this run's export", []).append(m["metric"])
        for why, names in by_reason.items():
            lines.append(f"N/A in {label} ({', '.join(names)}): {why}")
    return lines


def cmd_sources(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.cli.output import piped, print_json, print_rows
    from effmon.metrics import PLUGIN_ERRORS
    from effmon.plugins import load_registry

    registry = load_registry()
    errors = [*registry.load_errors, *(e for e in PLUGIN_ERRORS if e not in registry.load_errors)]
    sources: list[dict[str, Any]] = [
        {
            "name": spec.name,
            "live": spec.live,
            "role": spec.role or None,
            "entities": [e.name for e in spec.entities],
            "description": spec.description,
        }
        for spec in registry.sources.values()
    ]
    metrics = (
        [
            {"entity": entity.name, "metric": m.name, "unit": m.unit, "kind": m.kind, "description": m.description}
            for entity in registry.entities().values()
            for m in entity.metrics
        ]
        if args.metrics
        else []
    )
    derived = _derived_metrics() if args.metrics else []
    if args.json:
        return print_json(
            {
                "sources": sources,
                "metrics": metrics if args.metrics else None,
                "derived": derived if args.metrics else None,
                "errors": errors,
            }
        )
    if piped():
        for problem in errors:  # beside the rows, not among them
            print(f"effmon: {visible(problem)}", file=sys.stderr)
        print_rows(
            (s["name"], "live" if s["live"] else "-", ",".join(s["entities"]), s["description"]) for s in sources
        )
        print_rows((m["entity"], m["metric"], m["unit"], m["kind"], m["description"]) for m in metrics)
        return print_rows(("derived", d["key"], d["unit"], ",".join(d["needs"]), d["description"]) for d in derived)
    _print_sources(sources, errors, metrics, derived)
    return 0


def _print_sources(
    sources: list[dict[str, Any]], errors: list[str], metrics: list[dict[str, Any]], derived: list[dict[str, Any]]
) -> None:
    from rich.table import Table

    from effmon.cli.output import console, literal

    out = console()
    table = Table(title="Data sources (plugins)", title_justify="left")
    for col in ("source", "live", "entities", "description"):
        table.add_column(col, no_wrap=col == "source")
    for src in sources:
        table.add_row(
            literal(src["name"]),
            "yes" if src["live"] else "no",
            literal(", ".join(src["entities"])),
            literal(src["description"]),
        )
    out.print(table)
    for problem in errors:
        out.print(literal(problem, "red"))
    if metrics:
        mt = Table(title="Recorded metrics (what the sources read)", title_justify="left")
        for col in ("entity", "metric", "unit", "kind", "meaning"):
            mt.add_column(col)
        for m in metrics:
            mt.add_row(*(literal(m[k]) for k in ("entity", "metric", "unit", "kind", "description")))
        out.print(mt)
    if derived:
        dt = Table(title="Derived metrics (the registry: what reports, exports and the dashboard compute)",
                   title_justify="left")  # fmt: skip
        for col in ("metric", "unit", "better", "computed from", "exported as", "declared by", "meaning"):
            dt.add_column(col, no_wrap=col == "metric", overflow="fold")
        for d in derived:
            dt.add_row(
                literal(d["key"]),
                literal(d["unit"]),
                literal(d["better"] or "-"),
                literal(", ".join(d["needs"])),
                literal(
                    ", ".join(
                        x for x in (d["efficientllm"] and f"EfficientLLM {d['efficientllm']}", d["prometheus"]) if x
                    )
                    or "-"
                ),  # fmt: skip
                literal(d["declared_by"]),
                literal(d["description"]),
            )
        out.print(dt)


def _derived_metrics() -> list[dict[str, Any]]:
    """Every declaration of the metric registry, with what it is computed from and where it is exported."""
    from effmon.metrics import METRICS

    return [
        {
            "key": m.key,
            "label": m.label,
            "unit": m.unit,
            "better": m.better,
            "needs": list(m.needs),
            "family": m.family,
            "json": ".".join(m.json) if m.json else None,
            "efficientllm": m.efficientllm,
            "prometheus": m.export,
            "declared_by": m.module,
            "description": m.description,
        }
        for m in METRICS.values()
    ]


def _preset_record(p: Any) -> dict[str, Any]:
    return {
        "name": p.name,
        "kind": p.kind,
        "runs_with": "run" if p.kind == "train" else "serve",
        "method_or_precision": p.fields.get("method") if p.kind == "train" else p.fields.get("precision"),
        "model": p.fields.get("model"),
        "description": p.description,
        "path": str(p.path),
        "fields": p.fields,
        "command": p.command(resolve=True),
    }


def cmd_presets(args: argparse.Namespace, command: list[str]) -> int:
    import shlex

    from effmon.cli.output import console, literal, piped, print_json, print_rows
    from effmon.presets import PresetError, bundled, load

    try:
        if args.presets_cmd == "show":
            p = load(args.preset, args.set)
            if args.json:
                return print_json(_preset_record(p))
            out = console()
            out.print(literal(f"{p.name} ({p.path})", "bold"))
            out.print(literal(p.description))
            for key, value in p.fields.items():
                out.print(literal(f"  {key} = {value!r}"))
            out.print(literal("command: " + shlex.join(p.command(resolve=True))), soft_wrap=True)
            if p.kind == "serve":
                out.print(literal(f"run it with: effmon serve {p.name}   (server at {p.url})"))
            return 0
        records = [_preset_record(load(name)) for name in sorted(bundled())]
        if args.json:
            return print_json(records)
        if piped():
            return print_rows((r["name"], r["runs_with"], r["method_or_precision"], r["model"]) for r in records)
        from rich import box
        from rich.table import Table

        table = Table(
            title="Presets: effmon run --preset NAME (run), effmon serve NAME (serve)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        table.add_column("name", no_wrap=True, min_width=max(len(r["name"]) for r in records))
        table.add_column("with", no_wrap=True, min_width=5)
        table.add_column("method/precision", no_wrap=True, min_width=16)
        table.add_column("model", overflow="ellipsis", no_wrap=True, ratio=1)
        for r in records:
            table.add_row(literal(r["name"]), r["runs_with"], literal(r["method_or_precision"]), literal(r["model"]))
        console().print(table)
        return 0
    except PresetError as exc:
        return err(str(exc), 2)
