"""``effmon sweep URL|PRESET``: where the joules go across input length, output length, concurrency and tasks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from effmon.cli.common import Handler, err, formatter, positive, share


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers separated by commas, e.g. 64,256") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive whole numbers separated by commas, e.g. 64,256")
    return values


def register(sub: Any) -> dict[str, Handler]:
    sw = sub.add_parser(
        "sweep",
        help="an energy study of a server: J/token over input x output length x concurrency (and tasks)",
        description="Run a grid of loads against a server (a URL, or a serving preset effmon starts and stops) and "
        "record it as one session: first the server idle (its static power), then each cell (input length x "
        "output length x concurrency, or a task's prompts in place of the input length) as a phase, repeated in "
        "rounds until its tokens/s is stable. Per cell: J per output token and per request (energy counter "
        "where the GPU has one, else integrated power), static and dynamic energy, power, SM clock, throttle "
        "share, TTFT/TPOT/E2E, tokens/s, AEC and IT. effmon never changes a GPU setting unless --sm-clocks or "
        "--power-limits asks it to: energy is shown against the clock the GPU chose. See docs/energy.md.",
        epilog="examples:\n"
        "  effmon sweep tiny-cpu --input 32,128 --output 16,64 --concurrency 1,4\n"
        "  effmon sweep http://127.0.0.1:8000 --tasks generation,qa,summarisation --output 128 -o sweep.csv\n"
        "  sudo effmon sweep http://127.0.0.1:8000 --output 256 --sm-clocks 1980,1410,990   # a DVFS study\n"
        "  effmon report last --format html -o sweep.html      # heatmaps, the Pareto front, per-task bars",
        formatter_class=formatter(),
    )
    sw.add_argument("target", help="a server's base URL (http://HOST:PORT) or a serving preset (see effmon presets)")
    grid = sw.add_argument_group("the grid")
    grid.add_argument("--input", type=_ints, default=[128], metavar="N,N", help="prompt lengths in words (~tokens)")
    grid.add_argument("--output", type=_ints, default=[64], metavar="N,N", help="max_tokens of each request")
    grid.add_argument("--concurrency", type=_ints, default=[1], metavar="N,N", help="requests in flight (batch)")
    grid.add_argument(
        "--tasks",
        metavar="T,T",
        help="task prompt sets in place of --input: generation, qa, summarisation (shipped, offline) or files "
        '(JSON lines with "prompt", or paragraphs)',
    )
    cell = sw.add_argument_group("each cell")
    cell.add_argument("--requests", type=int, default=16, metavar="N", help="requests per round (default: 16)")
    cell.add_argument(
        "--spread",
        type=share,
        default=0.05,
        metavar="SHARE",
        help="stable when the last 3 rounds' tokens/s are within this share (default: 5%%)",
    )
    cell.add_argument("--max-rounds", type=int, default=6, metavar="N", help="rounds at most (default: 6)")
    cell.add_argument("--budget", type=positive, default=120.0, metavar="S", help="seconds per cell at most (120)")
    cell.add_argument("--idle", type=positive, default=10.0, metavar="S", help="idle baseline first (default: 10 s)")
    gpu = sw.add_argument_group(
        "GPU settings (only when asked: without these effmon never changes a GPU setting)",
        "Each option adds an axis: every cell runs at each value. Needs root; checked before anything\n"
        "changes; put back when the sweep ends, on Ctrl-C, SIGTERM or an error. A killed effmon leaves a\n"
        "record: effmon clocks --reset puts the GPUs back. Never on a GPU others are using.",
    )
    gpu.add_argument(
        "--sm-clocks", type=_ints, default=[], metavar="MHZ,MHZ", help="lock the SM clock, e.g. 1980,1410,990"
    )
    gpu.add_argument(
        "--power-limits", type=_ints, default=[], metavar="W,W", help="set the power limit, e.g. 700,500,350"
    )
    sw.add_argument("--model", help="model name sent with each request (a URL: default, the one the server lists)")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a preset: override a field")
    sw.add_argument("--timeout", type=positive, default=120.0, help="per-request timeout in s (default: 120)")
    sw.add_argument("-o", "--output-file", metavar="FILE", help="the cells' figures: FILE.csv or FILE.json")
    sw.add_argument("--force", action="store_true", help="with -o: also write through a link or into a device")
    sw.add_argument("--name", help="session name")
    sw.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    ck = sub.add_parser(
        "clocks",
        help="GPU settings effmon changed and did not put back (effmon sweep --sm-clocks); --reset puts them back",
        description="effmon changes a GPU's clocks or power limit only for effmon sweep --sm-clocks / "
        "--power-limits, and puts them back on every exit it can see. Killed (SIGKILL, a power cut), it leaves a "
        "record of what each GPU had: this shows it, and --reset puts the GPUs back from it.",
    )
    ck.add_argument("--reset", action="store_true", help="put back what the record says, then remove it")
    return {"sweep": cmd_sweep, "clocks": cmd_clocks}


def cmd_clocks(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.core.gpuctl import ClockError, read_record, record_path, reset_from_record

    try:
        record = read_record()
        if not record:
            print(f"effmon: no GPU setting changed by effmon is outstanding ({record_path()} does not exist)")
            return 0
        if not args.reset:
            print(f"effmon: {record_path()} (effmon pid {record.get('pid')}) holds what each GPU had:")
            for gpu, entry in sorted((record.get("gpus") or {}).items()):
                print(f"  GPU {gpu}: {json.dumps(entry)}")
            print("effmon: put them back with: effmon clocks --reset")
            return 1
        for line in reset_from_record():
            print(f"effmon: {line}")
        return 0
    except ClockError as exc:
        return err(str(exc), exc.code)


def cmd_sweep(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.core.files import check_target
    from effmon.recording import EXIT_USAGE, RecordError
    from effmon.serving.load import LoadConfig
    from effmon.serving.sweep import SweepConfig, SweepError, load_task

    if args.output_file:
        if Path(args.output_file).suffix not in (".csv", ".json"):
            return err(f"-o {args.output_file}: give a .csv or .json file", 2)
        check_target(args.output_file, args.force)
    if args.requests < 1 or args.max_rounds < 1:
        return err("--requests and --max-rounds must be at least 1", 2)
    try:
        tasks = {Path(t).stem: load_task(t) for t in args.tasks.split(",") if t.strip()} if args.tasks else {}
    except SweepError as exc:
        return err(str(exc), 2)
    base = LoadConfig(url="", model=args.model or "default", timeout_s=args.timeout, max_failures=0.5)
    sweep = SweepConfig(
        base=base, inputs=args.input, outputs=args.output, concurrency=args.concurrency, tasks=tasks,
        requests=args.requests, spread=args.spread, max_rounds=args.max_rounds, budget_s=args.budget,
        idle_s=args.idle, sm_clocks=args.sm_clocks, power_limits=[float(w) for w in args.power_limits],
    )  # fmt: skip
    if sweep.changes_gpu:  # before a server starts: the privilege, the values, no setting left from a killed run
        from effmon.core.gpuctl import ClockError, GpuSettings

        try:
            with GpuSettings() as gpu:
                gpu.check(sweep.sm_clocks, sweep.power_limits)
        except ClockError as exc:
            return err(str(exc), exc.code)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if args.target.startswith(("http://", "https://")):
        code, path = _against_url(args, sweep, say)
    else:
        if args.model:
            raise RecordError("--model is for a URL; a preset serves its own model (--set model=...)", EXIT_USAGE)
        code, path = _with_preset(args, sweep, say)
    if path is not None:
        _results(path, args, say)
    return code


def _with_preset(args: argparse.Namespace, sweep: Any, say: Any) -> tuple[int, Path | None]:
    from effmon.presets import PresetError, load
    from effmon.recording import EXIT_USAGE, RecordError, RecordOptions
    from effmon.serving.serve import serve
    from effmon.serving.sweep import sweep_driver

    try:
        preset = load(args.target, args.set)
    except PresetError as exc:
        raise RecordError(str(exc), EXIT_USAGE) from None
    opened: list[Path] = []
    options = RecordOptions(name=args.name, quiet=args.quiet)
    code = serve(preset, options, load=sweep.base, drive=sweep_driver(sweep, say),
                 on_open=lambda rec: opened.append(rec.path))  # fmt: skip
    return code, opened[0] if opened else None


def _against_url(args: argparse.Namespace, sweep: Any, say: Any) -> tuple[int, Path | None]:
    from effmon.serving.sweep import sweep_url

    return sweep_url(args.target, sweep, say, model=args.model, name=args.name, timeout_s=args.timeout)


def _results(path: Path, args: argparse.Namespace, say: Any) -> None:
    """The cells' figures from the saved session: a table, and -o FILE."""
    from effmon.core.files import safe_write
    from effmon.core.store import SessionReader
    from effmon.report.sweep import SweepMissing, sweep_figures, to_csv

    try:
        with SessionReader(path) as reader:
            doc = sweep_figures(reader)
    except SweepMissing as exc:
        say(f"effmon sweep: {exc}")
        return
    if not args.quiet:
        _print_table(doc)
    if args.output_file:
        text = to_csv(doc) if args.output_file.endswith(".csv") else json.dumps(doc, indent=2) + "\n"
        safe_write(args.output_file, text, args.force)
        say(f"effmon sweep: wrote {args.output_file}")
    say(f"effmon sweep: charts with: effmon report {path.stem} --format html -o sweep.html")


def _print_table(doc: dict[str, Any]) -> None:
    import shutil

    from rich.console import Console
    from rich.table import Table

    from effmon.report.sweep import NARROW, TABLE_HEAD, table_rows

    wide = shutil.get_terminal_size().columns >= 130
    idle = doc["idle_power_w"]
    t = Table(
        title=f"sweep: idle power {'N/A' if idle is None else f'{idle:.1f} W'} (the static part of each cell); "
        "latencies are medians",
        title_justify="left",
    )
    for h in TABLE_HEAD if wide else NARROW:
        t.add_column(h, justify="left" if h == "cell" else "right", no_wrap=h == "cell")
    for r in table_rows(doc, wide):
        t.add_row(*r)
    Console(stderr=True, markup=False, highlight=False).print(t)
