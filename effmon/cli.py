"""The ``effmon`` command line. Imports nothing heavy: each command imports what it needs."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EPILOG = """\
examples:
  effmon                                   live dashboard of this machine (same as: effmon top)
  effmon demo                              replay a recorded H100 session (no GPU needed)
  effmon replay last                       open the newest session in the dashboard
  effmon record -- python train.py --lr 1e-4
                                           record while a command runs; exits with its status
  effmon record --pid 1234                 record while a running process lives
  effmon record --replay trace.jsonl --speed 10
  effmon sessions                          list recorded sessions
  effmon sessions show last                one-screen summary of the newest session
  effmon report last --format efficientllm -o run.json
                                           EfficientLLM metrics (AMU, PCU, AL, TT/ST/IT, AEC, MCR)

Sessions are stored in $EFFMON_HOME (default ~/.local/share/effmon).
"""


def _size(text: str) -> int:
    units = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9}
    t = text.strip().upper()
    num = t.rstrip("KMGB")
    unit = t[len(num) :]
    try:
        value = float(num)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 500MB or 2GB") from None
    if unit not in units or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 500MB or 2GB")
    return int(value * units[unit])


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _add_rate_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument(
        "--rate",
        type=_positive,
        default=10.0,
        metavar="HZ",
        help="how often cheap GPU gauges are read (default: 10 Hz)",
    )
    g.add_argument(
        "--slow-interval",
        type=_positive,
        default=1.0,
        metavar="S",
        help="interval of expensive reads: energy counter, process utilisation, GPM (default: 1 s)",
    )
    g.add_argument(
        "--host-interval",
        type=_positive,
        default=1.0,
        metavar="S",
        help="interval of host and process-tree readings (default: 1 s)",
    )
    g.add_argument(
        "--source",
        action="append",
        dest="sources",
        metavar="NAME",
        help="use only these sources (repeatable; default: every live source, see `effmon sources`)",
    )
    p.add_argument("--name", help="session name (default: date, time and command)")
    p.add_argument(
        "--max-size", type=_size, metavar="SIZE", help="stop recording when the session file reaches SIZE (e.g. 500MB)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")


def build_parser() -> argparse.ArgumentParser:
    from effmon import __version__

    parser = argparse.ArgumentParser(
        prog="effmon",
        description="Live profiler for LLM training and inference efficiency: GPU memory, compute, "
        "power and energy, latency and throughput; records sessions and exports EfficientLLM metrics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"effmon {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")

    rec = sub.add_parser(
        "record",
        help="record a session while a command or process runs, or from a trace",
        description="Record GPU, host and process metrics into a session.",
        epilog="examples:\n  effmon record -- python train.py --lr 1e-4\n  effmon record --pid 1234\n"
        "  effmon record --replay trace.jsonl --as-fast-as-possible\n\n"
        "With a command, effmon exits with the command's exit status. Ctrl-C stops the command and\n"
        "keeps the session; a second Ctrl-C kills the command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = rec.add_mutually_exclusive_group()
    what.add_argument("--pid", type=int, help="watch this running process (and its children) until it exits")
    what.add_argument("--replay", metavar="TRACE", help="record from a trace file (.jsonl) as if it were live")
    rep = rec.add_argument_group("replay")
    rep.add_argument("--speed", type=_positive, default=1.0, help="replay N times faster than real time (default: 1)")
    rep.add_argument("--as-fast-as-possible", action="store_true", help="replay without waiting")
    _add_rate_options(rec)
    rec.add_argument("command", nargs="*", help="the command to run, after --")

    top = sub.add_parser(
        "top",
        help="live dashboard of this machine (the default command); records a session",
        description="Live dashboard of this machine's GPUs, processes and host. The readings are "
        "recorded into a session you can replay or report on later.",
    )
    top.add_argument("--refresh", type=_positive, default=1.0, metavar="S", help="screen refresh (default: 1 s)")
    _add_rate_options(top)

    rp = sub.add_parser(
        "replay",
        help="open a recorded session in the dashboard (follows it if still recording)",
        description="Open a session in the dashboard with a time cursor: space pause/play, "
        "arrows step, home/end jump, s speed x1/x10.",
    )
    rp.add_argument("session", help="name, unique prefix, path, or 'last'")
    rp.add_argument("--speed", type=_positive, default=1.0, help="play speed (default: 1)")
    rp.add_argument("--at", type=float, metavar="S", help="start the cursor S seconds into the session")
    rp.add_argument("--paused", action="store_true", help="start paused")
    rp.add_argument("--refresh", type=_positive, default=1.0, metavar="S", help="screen refresh (default: 1 s)")

    run = sub.add_parser(
        "run",
        help="launch a training command or preset, instrumented with no change to the script, and watch it",
        description="Launch a command (or a bundled preset) with the transformers Trainer instrumented through "
        "a sitecustomize on its PYTHONPATH: per-step time, tokens (the Trainer's own count), samples, loss, "
        "learning rate, grad norm, and the model's parameter counts and PEFT method. Opens the dashboard "
        "unless --headless; exits with the command's status.",
        epilog="examples:\n  effmon run --preset lora-tiny\n  effmon run --headless --preset dora-tiny --set r=16\n"
        "  effmon run -- python train.py --lr 1e-4\n  effmon run --preset lora-tiny --set model=./my-llama "
        "--set dataset=data.jsonl --set steps=500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--preset", help="a bundled preset (see `effmon presets`) or a .toml file")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    run.add_argument("--headless", action="store_true", help="record only, no dashboard")
    _add_rate_options(run)
    run.add_argument("command", nargs="*", help="the command to run, after --")

    att = sub.add_parser(
        "attach",
        help="watch a running process: its GPUs, memory, host use, and its step history if instrumented",
        description="Attach to a running process and record it until it exits (Ctrl-C or q stops watching, "
        "never the process). Steps reported through effmon.track or effmon run come with their history "
        "since the process started.",
    )
    att.add_argument("pid", type=int, nargs="?", help="the process to watch")
    att.add_argument("--url", help="instead of a pid: a vLLM server to watch through its /metrics")
    att.add_argument(
        "--window",
        type=_positive,
        default=60.0,
        metavar="S",
        help="with --url: latency percentiles over the last S seconds (default: 60)",
    )
    att.add_argument("--duration", type=_positive, metavar="S", help="with --url --headless: stop after S seconds")
    att.add_argument("--headless", action="store_true", help="record only, no dashboard")
    _add_rate_options(att)

    pre = sub.add_parser("presets", help="list bundled presets, or show one with its resolved command")
    pre_sub = pre.add_subparsers(dest="presets_cmd", metavar="ACTION")
    pshow = pre_sub.add_parser("show", help="print a preset and the exact command it runs")
    pshow.add_argument("preset")
    pshow.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    srv = sub.add_parser(
        "serve",
        help="start an inference server from a preset (vLLM, transformers serve), watch it, optionally load it",
        description="Start a server from a preset, wait until it is healthy (showing its log), record it with this "
        "machine's GPUs, and show the dashboard (or, with --load, drive it with the load generator and print the "
        "figures). Ctrl-C stops the load, then the server (SIGTERM, then SIGKILL), then saves the session.",
        epilog="examples:\n  effmon serve tiny-cpu --load --requests 50\n"
        "  effmon serve qwen2.5-7b-awq --set port=8001\n"
        "  effmon serve llama3.1-8b-fp8 --load --rate 4 --duration 120 --slo ttft=200ms,tpot=50ms\n"
        "  effmon presets show qwen2.5-7b-gptq-int4      # the exact command",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    srv.add_argument("preset", help="a serving preset (see `effmon presets`) or a .toml file")
    srv.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    srv.add_argument(
        "--timeout",
        type=_positive,
        default=600.0,
        metavar="S",
        help="how long to wait for the server to become healthy (default: 600 s)",
    )
    srv.add_argument("--headless", action="store_true", help="no dashboard: serve until Ctrl-C")
    srv.add_argument("--load", action="store_true", help="drive the server with the load generator, then stop it")
    srv.add_argument("--concurrency", type=int, default=None, help="--load: requests in flight (default 8)")
    srv.add_argument("--rate", type=_positive, help="--load: Poisson arrivals per second")
    srv.add_argument("--requests", type=int, help="--load: number of requests (default 100)")
    srv.add_argument("--duration", type=_positive, help="--load: seconds of load")
    srv.add_argument("--prompt-tokens", type=int, default=64)
    srv.add_argument("--output-tokens", type=int, default=64)
    srv.add_argument("--slo", help="--load: goodput SLO, e.g. ttft=200ms,tpot=50ms")
    srv.add_argument("--name", help="session name")
    srv.add_argument("-q", "--quiet", action="store_true", help="print only errors")

    ld = sub.add_parser(
        "load",
        help="drive an OpenAI-compatible server with streamed requests; TTFT, ITL, TPOT, E2E, throughput, goodput",
        description="Load an OpenAI-compatible server (vLLM, transformers serve, SGLang, TGI, llama.cpp) and "
        "measure on the client side. TTFT is timed to the first chunk that carries generated text; token counts "
        "come from the server's usage when it sends them; ITL is per content chunk. Failed and cut-off requests "
        "are counted apart and never enter the latency figures. The run is recorded as a session (with this "
        "machine's GPUs), so `effmon report` gives IT, AL per request and joules per token.",
        epilog="examples:\n  effmon load http://127.0.0.1:8000 --model my-model --concurrency 16 --requests 200\n"
        "  effmon load http://127.0.0.1:8000 --rate 4 --duration 60 --slo ttft=200ms,tpot=50ms\n"
        "  effmon load http://127.0.0.1:8000 --prompts prompts.jsonl --output-tokens 128",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ld.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    ld.add_argument("--model", default="default", help="model name sent with each request")
    ld.add_argument("--endpoint", choices=["chat", "completions"], default="chat")
    mode = ld.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, default=None, help="requests in flight (closed loop; default 8)")
    mode.add_argument("--rate", type=_positive, help="Poisson arrivals per second (open loop)")
    ld.add_argument("--max-concurrency", type=int, default=0, help="with --rate: cap on requests in flight")
    stop_group = ld.add_mutually_exclusive_group()
    stop_group.add_argument("--requests", type=int, help="send this many requests (default: 100)")
    stop_group.add_argument("--duration", type=_positive, help="send requests for this many seconds")
    ld.add_argument("--prompt-tokens", type=int, default=64, help="length of random prompts, in words (~tokens)")
    ld.add_argument("--output-tokens", type=int, default=64, help="max_tokens of each request")
    ld.add_argument("--prompts", help='a JSONL file of prompts ({"prompt": ...} or {"text": ...} a line)')
    ld.add_argument("--slo", help="goodput SLO, e.g. ttft=200ms,tpot=50ms")
    ld.add_argument("--timeout", type=_positive, default=120.0, help="per-request timeout in s (default: 120)")
    ld.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    ld.add_argument("--name", help="session name")
    ld.add_argument("-q", "--quiet", action="store_true", help="print only errors")

    demo = sub.add_parser(
        "demo",
        help="replay a recorded H100 session (LoRA fine-tune, matmul, generation): no GPU needed",
        description="Replays the H100 session bundled with effmon into a new session and shows it in the dashboard.",
    )
    demo.add_argument("--headless", action="store_true", help="no dashboard: a plain live table, then a summary")
    demo.add_argument("--speed", type=_positive, default=10.0, help="replay speed (default: 10x, about 10 s)")
    demo.add_argument("--as-fast-as-possible", action="store_true", help="replay without waiting")
    demo.add_argument("--trace", help="replay this trace instead of the bundled one")
    demo.add_argument("--no-live", action="store_true", help="do not draw the live view")
    demo.add_argument("--name", help="session name")

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

    rpt = sub.add_parser(
        "report",
        help="summarise a session: terminal table, EfficientLLM JSON, JSON, CSV",
        description="Compute EfficientLLM metrics (AMU, PCU, AL, TT/ST/IT, AEC, MCR) for a session.",
        epilog="examples:\n  effmon report last\n  effmon report last --format efficientllm -o run.json\n"
        "  effmon report last --phase lora_finetune --format json\n"
        "  effmon report int4-run --format efficientllm --precision int4 --perf 0.4361 \\\n"
        "      --baseline-precision bf16 --baseline-perf 0.4719\n\n"
        "--window takes seconds from the session start: 10:60, 30: (from 30 s on), :-5 (all but the last 5 s).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rpt.add_argument("session", help="name, unique prefix, path, or 'last'")
    rpt.add_argument(
        "--format",
        "-f",
        default="table",
        choices=["table", "efficientllm", "efficientllm-pretrain", "json", "csv", "md", "html"],
    )
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
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        if not sys.stdout.isatty():
            parser.print_help()
            print("\nNo GPU here? Try: effmon demo", file=sys.stderr)
            return 0
        args = parser.parse_args(["top"])
    try:
        return int(_dispatch(args, command, parser) or 0)
    except BrokenPipeError:
        return 0


def _err(message: str, code: int) -> int:
    print(f"effmon: error: {message}", file=sys.stderr)
    return code


def _dispatch(args: argparse.Namespace, command: list[str], parser: argparse.ArgumentParser) -> int:
    from effmon.paths import HomeError
    from effmon.recorder import RecordError
    from effmon.sessions import SessionNotFound
    from effmon.store import StoreError

    try:
        if args.cmd == "record":
            return _cmd_record(args, command + list(args.command))
        if args.cmd == "demo":
            return _cmd_demo(args)
        if args.cmd == "run":
            return _cmd_run(args, command + list(args.command))
        if args.cmd == "attach":
            return _cmd_attach(args)
        if args.cmd == "presets":
            return _cmd_presets(args)
        if args.cmd == "serve":
            return _cmd_serve(args)
        if args.cmd == "load":
            from effmon.load_cli import cmd_load

            return cmd_load(args)
        if args.cmd == "top":
            return _cmd_top(args)
        if args.cmd == "replay":
            return _cmd_replay(args)
        if args.cmd == "sessions":
            return _cmd_sessions(args)
        if args.cmd == "compare":
            from effmon.report.compare import cmd_compare

            return cmd_compare(args)
        if args.cmd == "sources":
            return _cmd_sources(args)
        if args.cmd == "report":
            from effmon.report.cli import cmd_report

            return cmd_report(args)
    except RecordError as exc:
        return _err(str(exc), exc.code)
    except (HomeError, SessionNotFound, StoreError) as exc:
        return _err(str(exc), 2)
    parser.error(f"unknown command {args.cmd}")
    return 2


def _record_options(args: argparse.Namespace, **kw: Any) -> Any:
    from effmon.recorder import RecordOptions

    return RecordOptions(
        name=args.name,
        tick_s=1.0 / args.rate,
        slow_s=args.slow_interval,
        host_s=args.host_interval,
        max_bytes=args.max_size,
        sources=args.sources,
        quiet=args.quiet,
        **kw,
    )


def _cmd_record(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.recorder import EXIT_USAGE, RecordError, record_command, record_pid, record_replay

    options = _record_options(args)
    chosen = sum(x is not None and x != [] for x in (args.pid, args.replay, command or None))
    if chosen != 1:
        raise RecordError(
            "give one of: a command after --, --pid PID, or --replay TRACE (e.g. effmon record -- python train.py)",
            EXIT_USAGE,
        )
    if args.pid is not None:
        return record_pid(args.pid, options)
    if args.replay:
        return record_replay(args.replay, options, speed=args.speed, as_fast_as_possible=args.as_fast_as_possible)
    return record_command(command, options)


def _need_terminal(what: str) -> int | None:
    if sys.stdout.isatty() and sys.stdin.isatty():
        return None
    return _err(
        f"{what} draws a dashboard and needs a terminal; use `effmon demo --headless`, "
        "`effmon record` or `effmon report` in scripts",
        2,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    import threading

    from effmon.recorder import RecordOptions, record_replay
    from effmon.trace import TraceError, bundled_trace_path, load_trace

    trace = args.trace or str(bundled_trace_path())
    pace = "full speed" if args.as_fast_as_possible else f"{args.speed:g}x"
    if args.headless or args.no_live or not (sys.stdout.isatty() and sys.stdin.isatty()):
        from effmon.liveview import live_view, progress_lines

        view = live_view if (sys.stdout.isatty() and not args.no_live) else progress_lines
        print(
            f"effmon demo: replaying a real H100 session ({os.path.basename(trace)}) at {pace}; Ctrl-C to stop",
            file=sys.stderr,
        )
        code = record_replay(
            trace,
            RecordOptions(name=args.name),
            speed=args.speed,
            as_fast_as_possible=args.as_fast_as_possible,
            view=view,
            slug="demo-h100",
        )
        if code == 0:
            from effmon.report.cli import print_summary
            from effmon.sessions import resolve

            print_summary(resolve("last"))
        return code
    try:
        load_trace(trace)
    except TraceError as exc:
        return _err(str(exc), 2)
    opened = threading.Event()
    stop = threading.Event()
    holder: dict[str, Any] = {}

    def on_open(recorder: Any) -> None:
        holder["path"] = recorder.path
        opened.set()

    def run() -> None:
        try:
            holder["code"] = record_replay(
                trace,
                RecordOptions(name=args.name, quiet=True, on_open=on_open),
                speed=args.speed,
                as_fast_as_possible=args.as_fast_as_possible,
                slug="demo-h100",
                stop=stop,
            )
        except Exception as exc:  # shown after the dashboard closes
            holder["error"] = exc
        finally:
            opened.set()

    thread = threading.Thread(target=run, name="effmon-demo", daemon=True)
    thread.start()
    opened.wait(30)
    if "path" not in holder:
        return _err(f"the demo could not start: {holder.get('error')}", 1)
    from effmon.tui.app import make_app

    app = make_app(holder["path"], mode="live", on_quit=stop.set)
    app.run()
    stop.set()
    thread.join(10)
    name = holder["path"].name.removesuffix(".effmon")
    print(
        f"effmon demo: session {name} saved; replay it with `effmon replay {name}`, "
        f"or report it with `effmon report {name}`",
        file=sys.stderr,
    )
    return 0


def _watch_in_dashboard(start: Any, what: str, stop: Any = None) -> int:
    """Record on a background thread (``start(on_open, on_child)`` returns an exit code) while the
    dashboard runs here; after the dashboard closes, recording goes on until the command ends."""
    import signal
    import threading

    opened = threading.Event()
    holder: dict[str, Any] = {}

    def on_open(recorder: Any) -> None:
        holder["path"] = recorder.path
        opened.set()

    def work() -> None:
        try:
            holder["code"] = start(on_open, lambda child: holder.update(child=child))
        except Exception as exc:
            holder["error"] = exc
        finally:
            opened.set()

    thread = threading.Thread(target=work, name="effmon-record", daemon=True)
    thread.start()
    opened.wait()
    if "path" not in holder:
        err = holder.get("error")
        return _err(str(err), getattr(err, "code", 1))
    from effmon.tui.app import make_app

    make_app(holder["path"], mode="live").run()
    if thread.is_alive():
        print(f"effmon: {what} is still running; recording goes on until it ends (Ctrl-C to stop it)", file=sys.stderr)
    interrupts = 0
    while thread.is_alive():
        try:
            thread.join(0.5)
        except KeyboardInterrupt:
            interrupts += 1
            child = holder.get("child")
            if child is None:  # attach: stop watching, never touch the process
                if stop is not None:
                    stop.set()
                thread.join(5)
                break
            child.send_signal(signal.SIGINT) if interrupts == 1 else child.kill()
    if "error" in holder:
        err = holder["error"]
        return _err(str(err), getattr(err, "code", 1))
    return int(holder.get("code", 0))


def _cmd_run(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.presets import PresetError, load
    from effmon.recorder import EXIT_USAGE, RecordError, record_command

    if bool(args.preset) == bool(command):
        raise RecordError(
            "give a preset (--preset lora-tiny) or a command after --, not both or neither (see: effmon presets)",
            EXIT_USAGE,
        )
    preset = None
    if args.preset:
        try:
            preset = load(args.preset, args.set)
        except PresetError as exc:
            raise RecordError(str(exc), EXIT_USAGE) from None
        if preset.kind != "train":
            raise RecordError(f"preset {preset.name} is a serving preset: effmon serve {preset.name}", EXIT_USAGE)
    elif args.set:
        raise RecordError("--set changes a preset's fields; with a command, pass its own arguments", EXIT_USAGE)
    options = _record_options(args)
    if args.headless or not (sys.stdout.isatty() and sys.stdin.isatty()):
        return record_command(command, options, launch=True, preset=preset)
    options.quiet = True

    def start(on_open: Any, on_child: Any) -> int:
        options.on_open = on_open
        return record_command(command, options, launch=True, preset=preset, on_child=on_child, capture_output=True)

    code = _watch_in_dashboard(start, "the command")
    _show_output_log(code)
    return code


def _show_output_log(code: int) -> None:
    """After the dashboard: where the command's output went, and its end if it failed."""
    from effmon.sessions import resolve
    from effmon.store import SessionReader

    try:
        with SessionReader(resolve("last")) as r:
            meta = r.meta()
    except Exception:
        return
    log = meta.get("output_log")
    if not log or not os.path.exists(log):
        return
    if code != 0:
        with open(log, encoding="utf-8", errors="replace") as f:
            tail = f.readlines()[-15:]
        sys.stderr.write("".join(tail))
    print(
        f"effmon: the command's output is in {log}; session {meta.get('name')} (exit {meta.get('exit_code')})",
        file=sys.stderr,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from effmon.load import LoadConfig, parse_slo
    from effmon.presets import PresetError, load
    from effmon.recorder import EXIT_USAGE, RecordError, RecordOptions
    from effmon.serve import serve

    try:
        preset = load(args.preset, args.set)
        slo = parse_slo(args.slo) if args.slo else (None, None)
    except (PresetError, ValueError) as exc:
        raise RecordError(str(exc), EXIT_USAGE) from None
    cfg = None
    if args.load:
        cfg = LoadConfig(
            url="",
            concurrency=args.concurrency or 8,
            rate=args.rate,
            duration=args.duration,
            requests=args.requests if args.requests is not None else (None if args.duration else 100),
            prompt_tokens=args.prompt_tokens,
            output_tokens=args.output_tokens,
            slo_ttft_s=slo[0],
            slo_tpot_s=slo[1],
        )
    dashboard = not args.load and not args.headless and sys.stdout.isatty() and sys.stdin.isatty()
    return serve(
        preset, RecordOptions(name=args.name, quiet=args.quiet), load=cfg, timeout_s=args.timeout, dashboard=dashboard
    )


def _cmd_attach(args: argparse.Namespace) -> int:
    from effmon.recorder import EXIT_USAGE, RecordError, record_pid, record_url

    if (args.pid is None) == (args.url is None):
        raise RecordError(
            "give a pid (effmon attach 1234) or a server (effmon attach --url http://127.0.0.1:8000)", EXIT_USAGE
        )
    options = _record_options(args)
    if args.url:
        if args.headless or not (sys.stdout.isatty() and sys.stdin.isatty()):
            return record_url(args.url, options, window_s=args.window, duration_s=args.duration)
        import threading

        options.quiet = True
        options.stop = threading.Event()

        def start_url(on_open: Any, on_child: Any) -> int:
            options.on_open = on_open
            on_child(None)
            return record_url(args.url, options, window_s=args.window)

        return _watch_in_dashboard(start_url, args.url, options.stop)
    if args.headless or not (sys.stdout.isatty() and sys.stdin.isatty()):
        return record_pid(args.pid, options)
    import psutil

    if not psutil.pid_exists(args.pid):
        return _err(f"no process with pid {args.pid}; check the pid (e.g. with `ps aux`)", 2)
    import threading

    options.quiet = True
    options.stop = threading.Event()

    def start(on_open: Any, on_child: Any) -> int:
        options.on_open = on_open
        on_child(None)
        return record_pid(args.pid, options)

    return _watch_in_dashboard(start, f"process {args.pid}", options.stop)


def _cmd_presets(args: argparse.Namespace) -> int:
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
        return _err(str(exc), 2)


def _cmd_top(args: argparse.Namespace) -> int:
    bad = _need_terminal("effmon top")
    if bad is not None:
        return bad
    from effmon.recorder import BackgroundRecording

    options = _record_options(args)
    options.quiet = True
    rec = BackgroundRecording(options)
    path = rec.start()
    for _, _level, text in rec.recorder.notices:
        print(f"effmon: {text}", file=sys.stderr)
    from effmon.tui.app import make_app

    app = make_app(path, mode="live", refresh_s=args.refresh)
    try:
        app.run()
    finally:
        rec.stop()
    print(f"effmon: session {path.name.removesuffix('.effmon')} saved", file=sys.stderr)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    bad = _need_terminal("effmon replay")
    if bad is not None:
        return bad
    from effmon.sessions import entry, resolve
    from effmon.tui.app import make_app

    path = resolve(args.session)
    e = entry(path)
    if e.error:
        return _err(e.error, 2)
    if e.state == "live":
        app = make_app(path, mode="live", refresh_s=args.refresh)
    else:
        app = make_app(path, mode="replay", refresh_s=args.refresh, speed=args.speed, paused=args.paused)
        lo, _ = app.view.time_range()
        if args.at is not None and lo is not None:
            app.cursor = lo + args.at
    app.run()
    return 0


def _cmd_sessions(args: argparse.Namespace) -> int:
    from effmon.sessions import list_sessions, resolve

    if args.sessions_cmd == "show":
        from effmon.report.cli import print_summary

        print_summary(resolve(args.session))
        return 0
    if args.sessions_cmd == "path":
        print(resolve(args.session))
        return 0
    from rich.console import Console
    from rich.table import Table

    from effmon.fmt import human_bytes, human_duration, timestamp
    from effmon.paths import sessions_dir

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
        if e.meta.get("exit_code") not in (None, 0):
            status += f" (exit {e.meta['exit_code']})"
        elif e.meta.get("exit_code") == 0:
            status += " (exit 0)"
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


def _cmd_sources(args: argparse.Namespace) -> int:
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
    for err in registry.load_errors:
        console.print(f"[red]{err}[/]")
    if args.metrics:
        mt = Table(title="Metrics", title_justify="left")
        for col in ("entity", "metric", "unit", "kind", "meaning"):
            mt.add_column(col)
        for entity in registry.entities().values():
            for m in entity.metrics:
                mt.add_row(entity.name, m.name, m.unit, m.kind, m.description)
        console.print(mt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
