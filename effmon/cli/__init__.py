"""The ``effmon`` command line. Imports nothing heavy: each command imports what it needs.

One module per command group, each with its options next to its handlers: ``record`` (record, run,
attach, top, demo, replay), ``sessions`` (sessions, report, compare, sources, presets), ``serve``
(serve, load), ``control`` (stop), ``export`` (a session on a Prometheus endpoint), ``web`` (the
dashboard in a browser).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from effmon.cli import control, export, record, serve, sessions, sweep, web
from effmon.cli.common import Handler, err
from effmon.core.interrupt import by_interrupt

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

GROUPS = (record, sessions, serve, sweep, control, export, web)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
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
    handlers: dict[str, Handler] = {}
    for group in GROUPS:
        handlers.update(group.register(sub))
    return parser, handlers


def _stacks_on_sigusr1() -> None:
    """``kill -USR1 <effmon's pid>`` prints every thread's stack on effmon's stderr (the session log for a
    detached recorder): how to see where a recorder that does not end is waiting. Stdlib, no cost until used."""
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):
        with contextlib.suppress(ValueError, OSError, RuntimeError, AttributeError):  # no real stderr, not main
            faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _stacks_on_sigusr1()
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if args.cmd is None:
        if not sys.stdout.isatty():
            parser.print_help()
            print("\nNo GPU here? Try: effmon demo", file=sys.stderr)
            return 0
        args = parser.parse_args(["top"])
    args.argv = argv  # effmon's own arguments (before --): --detach starts effmon again with them
    try:
        return int(_dispatch(handlers[args.cmd], args, command) or 0)
    except BrokenPipeError:
        return 0
    except (KeyboardInterrupt, Exception) as exc:  # Ctrl-C before a command installed its own handling (nothing
        if not by_interrupt(exc):  # was started yet); mid-import it may come wrapped (see by_interrupt)
            raise
        print("effmon: interrupted", file=sys.stderr)
        return 130


def _dispatch(handler: Handler, args: argparse.Namespace, command: list[str]) -> int:
    """Errors a user can fix end in one line and a non-zero status, never a traceback."""
    from effmon.core.extras import MissingExtra
    from effmon.core.files import UnsafePath
    from effmon.core.paths import HomeError
    from effmon.core.redact import RedactConfigError
    from effmon.core.sessions import SessionNotFound
    from effmon.core.store import StoreError
    from effmon.recording import RecordError

    try:
        return handler(args, command)
    except RecordError as exc:
        return err(str(exc), exc.code)
    except (HomeError, SessionNotFound, StoreError, MissingExtra, UnsafePath, RedactConfigError) as exc:
        return err(str(exc), 2)


if __name__ == "__main__":
    raise SystemExit(main())
