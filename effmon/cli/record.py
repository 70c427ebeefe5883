"""Commands that record: ``record``, ``run``, ``attach``, ``top``, ``demo``, and ``replay`` (which shows one)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from effmon.cli.common import (
    Handler,
    add_rate_options,
    duration,
    err,
    formatter,
    interactive,
    need_terminal,
    positive,
    record_options,
)
from effmon.cli.control import announce, detach, detached, relaunch_args


def register(sub: Any) -> dict[str, Handler]:
    rec = sub.add_parser(
        "record",
        help="record a session while a command or process runs, or from a trace",
        description="Record GPU, host and process metrics into a session.",
        epilog="examples:\n  effmon record -- python train.py --lr 1e-4\n  effmon record --pid 1234\n"
        "  effmon record --replay trace.jsonl --as-fast-as-possible\n\n"
        "With a command, effmon exits with the command's exit status. Ctrl-C stops the command and\n"
        "keeps the session; a second Ctrl-C kills the command.",
        formatter_class=formatter(),
    )
    what = rec.add_mutually_exclusive_group()
    what.add_argument("--pid", type=int, help="watch this running process (and its children) until it exits")
    what.add_argument("--replay", metavar="TRACE", help="record from a trace file (.jsonl) as if it were live")
    rep = rec.add_argument_group("replay")
    rep.add_argument("--speed", type=positive, default=1.0, help="replay N times faster than real time (default: 1)")
    rep.add_argument("--as-fast-as-possible", action="store_true", help="replay without waiting")
    rec.add_argument(
        "--detach",
        action="store_true",
        help="run in the background, without a terminal (survives an SSH drop); prints the session name: watch it with "
        "effmon replay NAME, stop it with effmon stop NAME",
    )
    add_rate_options(rec)
    rec.add_argument("command", nargs="*", help="the command to run, after --")

    top = sub.add_parser(
        "top",
        help="live dashboard of this machine (the default command); records a session",
        description="Live dashboard of this machine's GPUs, processes and host. The readings are "
        "recorded into a session you can replay or report on later. With --prometheus http://HOST:9090: the fleet "
        "view of every host and GPU a Prometheus server scrapes (nothing is recorded then).",
    )
    top.add_argument(
        "--refresh", type=positive, metavar="S", help="screen refresh (default: 1 s; 5 s in the fleet view)"
    )
    add_rate_options(top, fleet=True)
    fleet = top.add_argument_group(
        "many machines (with --prometheus http://HOST:9090)",
        "Every host and GPU a Prometheus server scrapes (dcgm-exporter, or effmon's own exporter on each node): one "
        "row per host with AEC, AMU and PCU over the window, the whole job's EfficientLLM strip, Enter for a "
        "host's GPU cards. Example: effmon top --prometheus http://prom:9090 --match '{job=\"train\"}'",
    )
    fleet.add_argument("--match", default="", metavar="SEL", help="label matchers in braces, e.g. '{job=\"train\"}'")
    fleet.add_argument(
        "--window", type=duration, default=300.0, metavar="DUR", help="figures over the last DUR (default: 5m)"
    )
    fleet.add_argument(
        "--range", metavar="START:END", help="a fixed stretch instead (Unix times or now-30m:now), e.g. a past job"
    )

    rp = sub.add_parser(
        "replay",
        help="open a recorded session in the dashboard (follows it if still recording)",
        description="Open a session in the dashboard with a time cursor: space pause/play, "
        "arrows step, home/end jump, s speed x1/x10.",
    )
    rp.add_argument("session", help="name, unique prefix, path, or 'last'")
    rp.add_argument("--speed", type=positive, default=1.0, help="play speed (default: 1)")
    rp.add_argument("--at", type=float, metavar="S", help="start the cursor S seconds into the session")
    rp.add_argument("--paused", action="store_true", help="start paused")
    rp.add_argument("--refresh", type=positive, default=1.0, metavar="S", help="screen refresh (default: 1 s)")

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
        formatter_class=formatter(),
    )
    run.add_argument("--preset", help="a bundled preset (see `effmon presets`) or a .toml file")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    run.add_argument("--headless", action="store_true", help="record only, no dashboard")
    run.add_argument(
        "--detach",
        action="store_true",
        help="run in the background, without a terminal (survives an SSH drop); prints the session name: watch it with "
        "effmon replay NAME, stop it with effmon stop NAME",
    )
    add_rate_options(run)
    run.add_argument("command", nargs="*", help="the command to run, after --")

    att = sub.add_parser(
        "attach",
        help="watch a running process: its GPUs, memory, host use, and its step history if instrumented",
        description="Attach to a running process and record it until it exits (Ctrl-C or q stops watching, "
        "never the process). Steps reported through effmon.track or effmon run come with their history "
        "since the process started.",
    )
    att.add_argument("pid", type=int, nargs="?", help="the process to watch")
    att.add_argument("--url", help="instead of a pid: an inference server to watch through its /metrics (vLLM)")
    att.add_argument(
        "--dcgm",
        metavar="URL",
        help="instead of a pid: a node's GPUs through its dcgm-exporter (e.g. http://node7:9400), for nodes where "
        "effmon is not installed",
    )
    att.add_argument(
        "--window",
        type=positive,
        default=60.0,
        metavar="S",
        help="with --url: latency percentiles over the last S seconds (default: 60)",
    )
    att.add_argument(
        "--duration", type=positive, metavar="S", help="with --url/--dcgm --headless: stop after S seconds"
    )
    att.add_argument("--headless", action="store_true", help="record only, no dashboard")
    add_rate_options(att)

    demo = sub.add_parser(
        "demo",
        help="replay a recorded H100 session (LoRA fine-tune, matmul, generation): no GPU needed",
        description="Replays the H100 session bundled with effmon into a new session and shows it in the dashboard.",
    )
    demo.add_argument("--headless", action="store_true", help="no dashboard: a plain live table, then a summary")
    demo.add_argument("--speed", type=positive, default=10.0, help="replay speed (default: 10x, about 10 s)")
    demo.add_argument("--as-fast-as-possible", action="store_true", help="replay without waiting")
    demo.add_argument("--trace", help="replay this trace instead of the bundled one")
    demo.add_argument("--no-live", action="store_true", help="do not draw the live view")
    demo.add_argument("--name", help="session name")
    return {
        "record": cmd_record,
        "top": cmd_top,
        "replay": cmd_replay,
        "run": cmd_run,
        "attach": cmd_attach,
        "demo": cmd_demo,
    }


def cmd_record(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.recording import EXIT_USAGE, RecordError, record_command, record_pid, record_replay

    command = command + list(args.command)
    options = headless_options(args)
    chosen = sum(x is not None and x != [] for x in (args.pid, args.replay, command or None))
    if chosen != 1:
        raise RecordError(
            "give one of: a command after --, --pid PID, or --replay TRACE (e.g. effmon record -- python train.py)",
            EXIT_USAGE,
        )
    if args.detach and (args.pid is not None or args.replay):
        raise RecordError("--detach runs a command in the background: effmon record --detach -- CMD", EXIT_USAGE)
    if args.pid is not None:
        return record_pid(args.pid, options)
    if args.replay:
        return record_replay(args.replay, options, speed=args.speed, as_fast_as_possible=args.as_fast_as_possible)
    if args.detach:
        return detach(relaunch_args(args, command), "the command")
    if detached():
        return record_command(command, options, capture_output=True, on_open=announce)
    return record_command(command, headless_options(args, launches=True))


def headless_options(args: argparse.Namespace, launches: bool = False, **overrides: Any) -> Any:
    """A recording without a dashboard: its training progress on stderr (unless -q): a progress bar under the
    job's output when stderr is a terminal and effmon ``launches`` the job (its output then comes through effmon),
    else a line every 10 s."""
    from effmon.cli.common import views
    from effmon.cli.progressview import TerminalProgress, progress_view

    quiet = overrides.get("quiet", getattr(args, "quiet", False))
    if quiet:
        return record_options(args, views=views(args), **overrides)
    if launches and sys.stderr.isatty() and not detached():
        shown = TerminalProgress()
        return record_options(args, views=views(args) + (shown.view,), echo=shown.echo, **overrides)
    return record_options(args, views=views(args) + (progress_view(),), **overrides)


def _dashboard(path: Any, mode: str = "live", interrupts: Any = None, **kw: Any) -> None:
    from effmon.tui.app import make_app, run_dashboard

    run_dashboard(make_app(path, mode=mode, **kw), interrupts)


def cmd_demo(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.recording import EXIT_INTERRUPTED, RecordOptions, record_replay
    from effmon.sources.trace import TraceError, bundled_trace_path, load_trace

    trace = args.trace or str(bundled_trace_path())
    pace = "full speed" if args.as_fast_as_possible else f"{args.speed:g}x"
    if args.headless or args.no_live or not interactive():
        from effmon.tui.liveview import live_view, progress_lines

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
            from effmon.core.sessions import resolve
            from effmon.report.render import print_summary

            print_summary(resolve("last"))
        return code
    try:
        load_trace(trace)
    except TraceError as exc:
        return err(str(exc), 2)
    stop = threading.Event()

    def start(on_open: Callable[[Any], None], on_child: Callable[[Any], None], intr: Any) -> int:
        return record_replay(
            trace,
            RecordOptions(name=args.name, quiet=True),
            speed=args.speed,
            as_fast_as_possible=args.as_fast_as_possible,
            slug="demo-h100",
            stop=stop,
            on_open=on_open,
            interrupts=intr,
        )

    code, path = _watch_in_dashboard(start, "the demo", stop, on_quit=stop.set)
    if code == EXIT_INTERRUPTED and stop.is_set():
        code = 0  # quitting the dashboard before the trace ends is how a demo ends
    if path is not None:
        name = path.name.removesuffix(".effmon")
        print(
            f"effmon demo: replay it with `effmon replay {name}`, report it with `effmon report {name}`",
            file=sys.stderr,
        )
    return code


Start = Callable[[Callable[[Any], None], Callable[[Any], None], Any], int]
"""``start(on_open, on_child, interrupts)``: records (on the recording thread) and returns an exit status."""


def _watch_in_dashboard(
    start: Start,
    what: str,
    stop: threading.Event | None = None,
    on_quit: Callable[[], None] | None = None,
) -> tuple[int, Any]:
    """Record on a background thread while the dashboard runs here. With ``on_quit`` (attach, demo) quitting the
    dashboard ends the recording; without it (a launched command) the recording goes on until the command ends.

    One ``Interrupts`` serves both threads: Ctrl-C, SIGTERM or SIGHUP close the dashboard (the terminal is
    restored) and reach the recording, which passes them on to the command and records why it ended. The wait
    for the recording is an event, never a ``join`` that a Ctrl-C could cut short."""
    from effmon.core.procs import Interrupts

    opened, done = threading.Event(), threading.Event()
    holder: dict[str, Any] = {}

    def on_open(recording: Any) -> None:
        holder["path"] = recording.path
        opened.set()

    with Interrupts() as intr:

        def work() -> None:
            try:
                holder["code"] = start(on_open, lambda child: holder.update(child=child), intr)
            except Exception as exc:
                holder["error"] = exc
            finally:
                opened.set()
                done.set()

        thread = threading.Thread(target=work, name="effmon-record", daemon=True)
        thread.start()
        opened.wait()
        if "path" not in holder:
            done.wait()
            error = holder.get("error")
            return err(str(error), getattr(error, "code", 1)), None
        _dashboard(holder["path"], interrupts=intr, on_quit=on_quit)
        if on_quit is not None:
            on_quit()
        elif not done.is_set() and not intr.count:
            _say(f"effmon: {what} is still running; recording goes on until it ends (Ctrl-C to stop it)")
        while not done.wait(0.5):
            pass
    if "error" in holder:
        error = holder["error"]
        return err(str(error), getattr(error, "code", 1)), holder.get("path")
    _say_saved(holder["path"])
    return int(holder.get("code", 0)), holder.get("path")


def _say(text: str) -> None:
    """A message on stderr that never fails (the terminal may be gone after a hangup)."""
    try:
        print(text, file=sys.stderr)
    except (OSError, ValueError):
        pass


def _say_saved(path: Any) -> None:
    """After a dashboard: how the session ended and where it is (the recording ran quietly)."""
    from effmon.core.sessions import entry

    e = entry(path)
    reason = e.meta.get("end_reason")
    _say(
        f"effmon: session {e.name} saved: {e.state}" + (f" ({reason})" if reason else "") + f"; see it with: "
        f"effmon sessions show {e.name}"
    )


def cmd_run(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.recording import EXIT_USAGE, RecordError
    from effmon.training.run import load_training_preset, run_training

    command = command + list(args.command)
    if bool(args.preset) == bool(command):
        raise RecordError(
            "give a preset (--preset lora-tiny) or a command after --, not both or neither (see: effmon presets)",
            EXIT_USAGE,
        )
    if not args.preset and args.set:
        raise RecordError("--set changes a preset's fields; with a command, pass its own arguments", EXIT_USAGE)
    preset = load_training_preset(args.preset, args.set) if args.preset else None
    if args.detach:
        return detach(relaunch_args(args, command), "the run")
    if detached():
        return run_training(command, preset, headless_options(args), capture_output=True, on_open=announce)
    if args.headless or not interactive():
        return run_training(command, preset, headless_options(args, launches=True))
    options = record_options(args, quiet=True)

    def start(on_open: Callable[[Any], None], on_child: Callable[[Any], None], intr: Any) -> int:
        return run_training(
            command, preset, options, on_open=on_open, on_child=on_child, capture_output=True, interrupts=intr
        )

    code, path = _watch_in_dashboard(start, "the command")
    if path is not None:
        _show_output_log(code, path)
    return code


def _show_output_log(code: int, path: Any) -> None:
    """After the dashboard: where the command's output went, and its end if it failed."""
    from effmon.core.fmt import visible
    from effmon.core.store import SessionReader, StoreError

    try:
        with SessionReader(path) as r:
            meta = r.meta()
    except StoreError:
        return
    log = meta.get("output_log")
    if not log or not os.path.exists(log):
        return
    if code != 0:
        with open(log, encoding="utf-8", errors="replace") as f:
            tail = f.readlines()[-15:]
        sys.stderr.write("".join(visible(line, keep_newlines=True) for line in tail))
    print(
        f"effmon: the command's output is in {log}; session {meta.get('name')} (exit {meta.get('exit_code')})",
        file=sys.stderr,
    )


def cmd_attach(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.recording import EXIT_USAGE, RecordError, record_pid
    from effmon.serving.attach import record_url

    if sum(x is not None for x in (args.pid, args.url, args.dcgm)) != 1:
        raise RecordError(
            "give one of: a pid (effmon attach 1234), a server (effmon attach --url http://127.0.0.1:8000) or a "
            "node's dcgm-exporter (effmon attach --dcgm http://node7:9400)",
            EXIT_USAGE,
        )
    headless = args.headless or not interactive()
    options = record_options(args, quiet=args.quiet or not headless)
    url, dcgm = args.url or args.dcgm, args.dcgm is not None
    if url:
        if headless:
            return record_url(url, options, window_s=args.window, duration_s=args.duration, dcgm=dcgm)
        stop = threading.Event()

        def start_url(on_open: Callable[[Any], None], on_child: Callable[[Any], None], intr: Any) -> int:
            return record_url(url, options, window_s=args.window, stop=stop, on_open=on_open, interrupts=intr,
                              dcgm=dcgm)  # fmt: skip

        return _watch_in_dashboard(start_url, url, stop, on_quit=stop.set)[0]
    if headless:
        return record_pid(args.pid, headless_options(args, quiet=args.quiet))
    import psutil

    if not psutil.pid_exists(args.pid):
        return err(f"no process with pid {args.pid}; check the pid (e.g. with `ps aux`)", 2)
    stop = threading.Event()

    def start(on_open: Callable[[Any], None], on_child: Callable[[Any], None], intr: Any) -> int:
        return record_pid(args.pid, options, stop=stop, on_open=on_open, interrupts=intr)

    return _watch_in_dashboard(start, f"process {args.pid}", stop, on_quit=stop.set)[0]


def cmd_top(args: argparse.Namespace, command: list[str]) -> int:
    if (args.prometheus or "").startswith(("http://", "https://")):
        return cmd_fleet(args)
    if args.match or args.range:
        return err("--match and --range read a Prometheus server: give it, --prometheus http://HOST:9090", 2)
    bad = need_terminal("effmon top")
    if bad is not None:
        return bad
    from effmon.recording import record_machine

    path = record_machine(
        record_options(args, quiet=True),
        lambda path, intr: _dashboard(path, interrupts=intr, refresh_s=args.refresh or 1.0),
        sources_with={"busiest": 10},  # nothing is watched in top: show the busiest processes, as top does
    )
    _say(f"effmon: session {path.name.removesuffix('.effmon')} saved")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    """``effmon top --prometheus URL``: a first read here (a wrong URL or --match fails before the screen opens),
    then the fleet view."""
    import time

    from effmon.core.fmt import human_duration
    from effmon.core.redact import redact_text
    from effmon.report.fromprom import PrometheusError, parse_range

    try:
        fixed = parse_range(args.range) if args.range else None
        start, end = fixed or (time.time() - args.window, time.time())
        from effmon.report.fleet import fleet_snapshot

        first = fleet_snapshot(args.prometheus, args.match, start, end)
    except PrometheusError as exc:
        return err(str(exc), 2)
    if not first.hosts:
        where = f"{args.match} " if args.match else ""
        return err(
            f"{redact_text(args.prometheus)} has no dcgm-exporter series {where}in "
            f"{f'--range {args.range}' if fixed else f'the last {human_duration(args.window)}'}: is "
            "dcgm-exporter (or effmon export/record --prometheus) among its targets? See its /targets page; "
            "check --match",
            2,
        )
    bad = need_terminal("effmon top --prometheus")
    if bad is not None:
        return bad
    from effmon.core.procs import Interrupts
    from effmon.tui.app import run_dashboard
    from effmon.tui.fleet import FleetApp

    app = FleetApp(args.prometheus, args.match, window_s=args.window, fixed=fixed, refresh_s=args.refresh or 5.0,
                   first=first)  # fmt: skip
    with Interrupts() as intr:
        run_dashboard(app, intr)
    return 0


def cmd_replay(args: argparse.Namespace, command: list[str]) -> int:
    bad = need_terminal("effmon replay")
    if bad is not None:
        return bad
    from effmon.core.sessions import entry, resolve
    from effmon.tui.app import make_app, run_dashboard

    path = resolve(args.session)
    e = entry(path)
    if e.error:
        return err(e.error, 2)
    if e.state == "live":
        app = make_app(path, mode="live", refresh_s=args.refresh)
    else:
        from effmon.core.jobs import JobError, as_one

        try:  # a node's session of a multi-node job: the whole job, every node's GPUs
            path = as_one([path])[0][0]
        except JobError as exc:
            return err(str(exc), 2)
        app = make_app(path, mode="replay", refresh_s=args.refresh, speed=args.speed, paused=args.paused)
        lo, _ = app.view.time_range()
        if args.at is not None and lo is not None:
            app.cursor = lo + args.at
    run_dashboard(app)
    return 0
