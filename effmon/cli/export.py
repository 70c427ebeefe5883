"""``effmon export``: a session, live or finished, on a Prometheus endpoint."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any

from effmon.cli.common import Handler, formatter, prometheus_addr


def register(sub: Any) -> dict[str, Handler]:
    exp = sub.add_parser(
        "export",
        help="serve a session (being recorded, or finished) on a Prometheus endpoint",
        description="Serve a session on a Prometheus /metrics endpoint: GPU gauges under dcgm-exporter's names and "
        "labels (DCGM_FI_DEV_POWER_USAGE, DCGM_FI_DEV_FB_USED, DCGM_FI_PROF_SM_ACTIVE ...), so existing Grafana "
        "boards work, and effmon's own figures (effmon_training_*, effmon_serving_*, J per token and per step). "
        "A session still being recorded is followed; a finished one serves its last values. Runs until Ctrl-C.",
        epilog="examples:\n  effmon export last                       http://127.0.0.1:9400/metrics\n"
        "  effmon export run1 --prometheus 9500\n"
        "  effmon export last --prometheus 0.0.0.0:9400   # other machines may scrape it (say so on purpose)\n"
        "  effmon record --prometheus 9400 -- python train.py   # serve while recording",
        formatter_class=formatter(),
    )
    exp.add_argument("session", nargs="?", default="last", help="name, unique prefix, path, or 'last' (default)")
    exp.add_argument(
        "--prometheus",
        metavar="ADDR",
        type=prometheus_addr,
        default="127.0.0.1:9400",
        help="where to listen: PORT or HOST:PORT (default: 127.0.0.1:9400; 0 picks a free port)",
    )
    exp.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    return {"export": cmd_export}


def cmd_export(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.core.procs import catch
    from effmon.core.sessions import resolve
    from effmon.report.prometheus import Exporter, ExporterError

    path = resolve(args.session)
    try:
        exporter = Exporter(path, args.prometheus).start()
    except ExporterError as exc:
        print(f"effmon: error: {exc}", file=sys.stderr)
        return exc.code
    print(f"effmon: serving {path.stem} at {exporter.url} (Ctrl-C stops)", file=sys.stderr, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        catch(sig, lambda *_: stop.set())  # one that nohup set to be ignored stays ignored
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        while not stop.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        pass
    finally:
        exporter.stop()
    return 0
