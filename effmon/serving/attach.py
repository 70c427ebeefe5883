"""``effmon attach --url``: watch an inference server through its metrics endpoint, beside this machine."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable
from urllib.parse import urlparse

from effmon.core.redact import redact_text
from effmon.plugins import Registry, load_registry
from effmon.recording import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_IOERR,
    EXIT_USAGE,
    Ending,
    Interrupts,
    RecordError,
    Recording,
    RecordOptions,
)

SERVER_METRICS = "server_metrics"


def server_metrics_source(registry: Registry) -> str:
    """The source that reads a server's metrics endpoint (the vLLM integration registers one)."""
    names = registry.with_role(SERVER_METRICS)
    if not names:
        raise RecordError(
            "no installed plugin reads a server's metrics endpoint (the vLLM integration, effmon_vllm, does); "
            "reinstall effmon",
            EXIT_ERROR,
        )
    return names[0]


def metrics_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise RecordError(f"{url!r} is not an http(s) URL; e.g. --url http://127.0.0.1:8000", EXIT_USAGE)
    return url if parsed.path.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics"


def record_url(
    url: str,
    options: RecordOptions,
    *,
    window_s: float = 60.0,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    on_open: Callable[[Recording], None] | None = None,
    interrupts: Interrupts | None = None,
    dcgm: bool = False,
) -> int:
    """Watch a serving engine through its metrics, beside this machine, until Ctrl-C, ``stop`` or ``duration_s``;
    with ``dcgm``, a node's GPUs through its dcgm-exporter instead (and nothing of this machine)."""
    target = metrics_url(url)
    registry = load_registry()
    parsed = urlparse(url)
    netloc = f"{parsed.hostname}:{parsed.port}" if parsed.port else str(parsed.hostname)  # never the user info
    if dcgm:  # another node's GPUs: this machine's own sources would be mixed in as if they were its
        source, sources = "dcgm", (*(options.sources or ()), "dcgm")
        meta = {"command": ["effmon", "attach", "--dcgm", url], "run_kind": "node"}
        extra: dict[str, object] = {"dcgm_url": target}
    else:
        source = server_metrics_source(registry)
        sources = (*(options.sources or registry.live_sources()), source)
        meta = {"command": ["effmon", "attach", "--url", url], "run_kind": "inference"}
        extra = {"metrics_url": target, "window_s": window_s}
    rec = Recording(
        "url",
        dataclasses.replace(options, sources=sources),
        slug=f"{'dcgm' if dcgm else 'attach'}-{netloc.replace(':', '-')}",
        meta=meta,
        registry=registry,
        sources_with=extra,
    )
    with interrupts or Interrupts() as intr, rec:
        try:
            rec.open()
        except RecordError:  # the one source could not open (--dcgm watches nothing else): say why, as a usage error
            if source not in rec.open_failures:
                raise
            raise RecordError(rec.open_failures[source], EXIT_USAGE) from None
        if source not in [s.name for s in rec.sources]:
            why = rec.open_failures.get(source) or f"cannot read {target}"
            rec.finish("failed", why)
            raise RecordError(why, EXIT_USAGE)
        if on_open is not None:
            on_open(rec)
        if not options.quiet:
            print(f"effmon: recording {rec.path.name} from {redact_text(target)}; Ctrl-C to stop", file=sys.stderr)
        rec.start()
        started = time.monotonic()
        detached = {"detached": True}

        def timed_out() -> Ending | None:
            if duration_s is not None and time.monotonic() - started >= duration_s:
                return Ending("complete", f"--duration {duration_s:g} s reached", meta=detached)
            return None

        def detach(intr: Interrupts) -> Ending:
            reason = f"stopped watching; the {'node' if dcgm else 'server'} at {netloc} goes on"
            return Ending("complete", reason, EXIT_INTERRUPTED if intr.count else 0, meta=detached)

        ending = rec.run_until(intr, done=timed_out, stop=stop, on_stop=detach)
    rec.report_end(ending.reason)
    return EXIT_IOERR if rec.write_error else ending.code
