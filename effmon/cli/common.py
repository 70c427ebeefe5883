"""What every command group shares: argument types, the sampling options, errors, terminal checks."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace, list[str]], int]


def size(text: str) -> int:
    units = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9}
    t = text.strip().upper()
    number = t.rstrip("KMGB")
    unit = t[len(number) :]
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 500MB or 2GB") from None
    if unit not in units or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use e.g. 500MB or 2GB")
    return int(value * units[unit])


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
    return value


def duration(text: str) -> float:
    """Seconds: 90, 90s, 5m, 1h, 1d."""
    t = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(t[-1:], None) if t else None
    try:
        value = float(t[:-1] if scale else t) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; use e.g. 90s, 5m or 1h") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a duration is positive and finite, e.g. 5m")
    return value


def share(text: str) -> float:
    """A fraction: 0.05 or 5%."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share; use e.g. 0.05 or 5%") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a share is between 0 and 1 (0% and 100%)")
    return value


def add_rate_options(p: argparse.ArgumentParser, fleet: bool = False) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument(
        "--rate", type=positive, default=10.0, metavar="HZ", help="how often cheap GPU gauges are read (default: 10 Hz)"
    )
    g.add_argument(
        "--slow-interval",
        type=positive,
        default=1.0,
        metavar="S",
        help="interval of expensive reads: energy counter, process utilisation, GPM (default: 1 s)",
    )
    g.add_argument(
        "--host-interval",
        type=positive,
        default=1.0,
        metavar="S",
        help="interval of host and process-tree readings (default: 1 s)",
    )
    add_prometheus_option(g, fleet)
    g.add_argument(
        "--source",
        action="append",
        dest="sources",
        metavar="NAME",
        help="use only these sources (repeatable; default: every live source, see `effmon sources`)",
    )
    p.add_argument("--name", help="session name (default: date, time and command)")
    p.add_argument(
        "--max-size", type=size, metavar="SIZE", help="stop recording when the session file reaches SIZE (e.g. 500MB)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")


def record_options(args: argparse.Namespace, **overrides: Any) -> Any:
    from effmon.recording import RecordOptions

    values = {
        "name": args.name,
        "tick_s": 1.0 / args.rate,
        "slow_s": args.slow_interval,
        "host_s": args.host_interval,
        "max_bytes": args.max_size,
        "sources": tuple(args.sources) if args.sources else None,
        "quiet": args.quiet,
    }
    return RecordOptions(**{**values, "views": views(args), **overrides})


def views(args: argparse.Namespace) -> tuple[Any, ...]:
    """What a recording serves while it runs: the Prometheus exporter of ``--prometheus ADDR``."""
    if not getattr(args, "prometheus", None):
        return ()
    from effmon.report.prometheus import prometheus_view

    return (prometheus_view(args.prometheus),)


def add_prometheus_option(p: argparse.ArgumentParser | Any, fleet: bool = False) -> None:
    serve = (
        "serve the session on a Prometheus endpoint while it records: PORT or HOST:PORT (127.0.0.1 unless a "
        "host is given); GPU gauges under dcgm-exporter's names, effmon's training and serving figures"
    )
    p.add_argument(
        "--prometheus",
        metavar="ADDR|URL",
        type=prometheus_addr_or_url if fleet else prometheus_addr,
        help=serve + ". A server's URL instead (http://HOST:9090) opens the fleet view: every host and GPU "
        "that Prometheus server knows"
        if fleet
        else serve,
    )


def prometheus_addr_or_url(value: str) -> str:
    """``top --prometheus``: a Prometheus server to read (an http(s) URL: the fleet view), or an address to serve."""
    return value if value.startswith(("http://", "https://")) else prometheus_addr(value)


def prometheus_addr(addr: str) -> str:
    from effmon.report.prometheus import check_addr

    return check_addr(addr)


def err(message: str, code: int) -> int:
    print(f"effmon: error: {message}", file=sys.stderr)
    return code


def interactive() -> bool:
    """A person is watching: a terminal, or a browser tab of ``effmon web`` (Textual's web driver)."""
    if "web_driver" in os.environ.get("TEXTUAL_DRIVER", ""):
        return True
    return sys.stdout.isatty() and sys.stdin.isatty()


def need_terminal(what: str) -> int | None:
    if interactive():
        return None
    return err(
        f"{what} draws a dashboard and needs a terminal; use `effmon demo --headless`, "
        "`effmon record` or `effmon report` in scripts",
        2,
    )


def formatter() -> type[argparse.HelpFormatter]:
    return argparse.RawDescriptionHelpFormatter
