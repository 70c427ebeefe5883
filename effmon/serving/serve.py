"""``effmon serve PRESET``: start an inference server from a preset, wait until it is healthy, record it
(and optionally load it), and stop it cleanly: the load first, then the server (SIGTERM, then SIGKILL after
a grace period), then the session. Engines (vLLM, transformers serve) come from plugins."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effmon.core.logpipe import RedactedLog
from effmon.core.procs import die_with_parent, identity
from effmon.core.redact import redact_argv
from effmon.plugins import EngineSpec, load_registry
from effmon.recipes.quantize import QuantizeError, quantization_of
from effmon.recording import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Interrupts,
    RecordError,
    Recording,
    RecordOptions,
)
from effmon.serving.attach import server_metrics_source
from effmon.serving.load import LoadConfig, LoadSummary, record_load, verdict

GRACE_S = 15.0

DIAGNOSES = (
    (
        (
            "is not a local folder and is not a valid model identifier",
            "Repository Not Found",
            "does not appear to have",
            "We couldn't connect to",
            "offline mode",
            "HFValidationError",
            "No such file or directory",
            "Repo id must be in the form",
            "LocalEntryNotFoundError",
            "outgoing traffic has been disabled",
        ),
        "the model was not found: no such local folder, or a hub id that cannot be fetched (offline?); "
        "check --set model=...",
    ),
    (("Address already in use",), "the port is in use: pick another with --set port=..."),
    (("ModuleNotFoundError", "ImportError"), "a Python package is missing in the server's environment"),
)


def diagnose(log_text: str, engine: EngineSpec | None = None) -> str:
    for needles, advice in (*(engine.diagnoses if engine else ()), *DIAGNOSES):
        if any(n in log_text for n in needles):
            return advice
    return "see the server log"


def _port_free(port: int) -> bool:
    """Nothing listens on the port. Connections of an earlier server still in TIME_WAIT do not count: the
    server binds with SO_REUSEADDR (as uvicorn and vLLM do), and so does this check."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "".join(path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def preflight(preset: Any) -> EngineSpec:
    """Everything that can be checked before anything starts: the engine, the model path, the port."""
    engines = load_registry().engines
    name = str(preset.fields.get("engine"))
    spec = engines.get(name)
    if spec is None:
        raise RecordError(f"engine {name!r} is not installed; installed: {', '.join(engines) or 'none'}", EXIT_USAGE)
    if not spec.available():
        raise RecordError(spec.install_hint, EXIT_USAGE)
    model = str(preset.fields.get("model", ""))
    if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().exists():
        raise RecordError(
            f"model path {model} does not exist; give an existing directory or a hub id (--set model=...)", EXIT_USAGE
        )
    port = int(preset.fields.get("port", 8000))
    if not _port_free(port):
        raise RecordError(f"port {port} is in use (another server?); pick another: --set port={port + 1}", EXIT_USAGE)
    return spec


@dataclass
class Server:
    """The launched server: its process, its log, and how to explain its death."""

    process: subprocess.Popen[Any]
    log_path: Path
    engine: EngineSpec
    log: RedactedLog | None = None

    def died(self, what: str) -> RecordError:
        if self.log is not None:
            self.log.close(2.0)  # its last words are in the log before it is shown
        return RecordError(
            f"{what}: {diagnose(_tail(self.log_path, 40), self.engine)}.\n"
            f"--- end of the server log ({self.log_path}) ---\n{_tail(self.log_path)}",
            EXIT_ERROR,
        )

    def stop(self) -> None:
        """SIGTERM to the server's process group, then SIGKILL after a grace period."""
        if self.process.poll() is not None:
            if self.log is not None:
                self.log.close(2.0)
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        except ProcessLookupError:
            pass
        finally:
            if self.log is not None:
                self.log.close(2.0)


NOISE = re.compile(
    r"Failed to load .*torchao|torchao.*Detected no triton|torch/utils/_pytree\.py.*Enum subclass|"
    r"real_accelerator\.py.*Setting accelerator to CPU|FutureWarning|DeprecationWarning|^\s*warnings\.warn\("
)
"""Library notices a server prints at start that mean nothing here (a CPU without torchao's CUDA kernels, torch's
deprecations): not echoed while effmon waits for the server (its log keeps them)."""


def _wait_healthy(server: Server, url: str, intr: Interrupts, timeout_s: float, say: Callable[[str], None]) -> bool:
    """Until the server answers /health; False if the user stopped it first. Shows the log as it grows."""
    started, shown = time.monotonic(), 0
    while not _healthy(url):
        if server.process.poll() is not None:
            raise server.died(f"the server exited with status {server.process.returncode} before it was healthy")
        if intr.count:
            return False
        if time.monotonic() - started > timeout_s:
            raise RecordError(
                f"the server was not healthy within {timeout_s:g} s (raise --timeout); the log ends with:\n"
                f"{_tail(server.log_path)}",
                EXIT_ERROR,
            )
        lines = _tail(server.log_path, 1000).splitlines()
        for line in lines[shown:]:
            if not NOISE.search(line):  # kept in the log, not worth the user's screen
                say(f"  server| {line}")
        shown = len(lines)
        time.sleep(0.5)
    say(f"effmon serve: healthy at {url} after {time.monotonic() - started:.1f} s")
    return True


def local_tokenizer(model: str) -> str | None:
    """The served model's folder when it holds its tokenizer: the load counts tokens per chunk with it."""
    return model if model and (Path(model).expanduser() / "tokenizer.json").is_file() else None


def _drive_load(
    rec: Recording,
    server: Server,
    cfg: LoadConfig,
    intr: Interrupts,
    show: Callable[[LoadSummary], None],
    say: Callable[[str], None],
) -> tuple[str, str, int]:
    results, summary = record_load(rec, cfg, lambda: intr.count > 0 or server.process.poll() is not None, say=say)
    show(summary)
    if server.process.poll() is not None:
        raise server.died(f"the server died under load (status {server.process.returncode})")
    if intr.count:
        return "interrupted", f"stopped by {intr.last_name} after {len(results)} requests", EXIT_INTERRUPTED
    failed = verdict(summary)
    if failed:
        print(f"effmon: error: {failed} ({summary.first_error})", file=sys.stderr)
        return "failed", failed, EXIT_ERROR
    return "complete", "the load finished", 0


def _serve_until_stopped(server: Server, intr: Interrupts, say: Callable[[str], None]) -> tuple[str, str, int]:
    say("effmon serve: serving; Ctrl-C stops the server and saves the session")
    while not intr.count and server.process.poll() is None:
        intr.event.wait(0.5)
    if server.process.poll() is not None and not intr.count:
        reason = f"the server exited (status {server.process.returncode})"
        print(f"effmon: error: {server.died(reason)}", file=sys.stderr)
        return "failed", reason, EXIT_ERROR
    return "interrupted", f"stopped by {intr.last_name}", EXIT_INTERRUPTED


def _watch(
    rec: Recording,
    server: Server,
    intr: Interrupts,
    say: Callable[[str], None],
    load: LoadConfig | None,
    drive: Callable[[Recording, LoadConfig, Callable[[], bool]], tuple[str, str, int]] | None,
    dashboard: Callable[[Path, Interrupts], None] | None,
    show_load: Callable[[LoadSummary], None],
) -> tuple[str, str, int]:
    """What the server is there for: a load (or the caller's ``drive`` of it: effmon sweep), the dashboard, or
    serving until Ctrl-C; the session's ending (status, reason, exit code)."""
    if load is not None and drive is not None:
        ended = drive(rec, load, lambda: intr.count > 0 or server.process.poll() is not None)
        if server.process.poll() is not None:
            raise server.died(f"the server died under load (status {server.process.returncode})")
        return ended
    if load is not None:
        return _drive_load(rec, server, load, intr, show_load, say)
    if dashboard is not None:
        dashboard(rec.path, intr)
        if intr.count:
            return "interrupted", f"stopped by {intr.last_name}", EXIT_INTERRUPTED
        return "complete", "the dashboard was closed", 0
    return _serve_until_stopped(server, intr, say)


def _recording(
    preset: Any, options: RecordOptions, engine: Any, model_dir: str | None, argv: list[str]
) -> tuple[Recording, tuple[str, ...] | None]:
    """The serving session: this machine's sources, and the server's own metrics endpoint where it has one."""
    f = preset.fields
    registry = load_registry()
    sources = None
    if engine.metrics:  # the server has a metrics endpoint: scrape it into the session too
        sources = (*(options.sources or registry.live_sources()), server_metrics_source(registry))
    rec = Recording(
        "serve",
        dataclasses.replace(options, sources=sources or options.sources),
        slug=preset.name,
        meta={
            "command": argv,
            "run_kind": "inference",
            "precision": f.get("precision"),
            "precision_bits": f.get("bits"),
            "preset": {"name": preset.name, "path": str(preset.path), **f},
            "model_dir": model_dir,
            "quantization": quantization_of(Path(model_dir)) if model_dir else None,
        },
        registry=registry,
        sources_with={"metrics_url": preset.url + "/metrics", "wait_for_server": True},
    )
    return rec, sources


def _launch(rec: Recording, argv: list[str], model_dir: str | None, engine: Any) -> Server:
    """The server, started in its own process group, its output redacted into NAME.log beside the session."""
    log = RedactedLog(rec.path.with_suffix(".log"))  # the server's output, redacted, beside the session
    log_path = log.path
    rec.set_meta(output_log=str(log_path))
    env = dict(os.environ)
    if model_dir:
        env.setdefault("HF_HUB_OFFLINE", "1")
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log.fd,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped as a whole
            preexec_fn=die_with_parent(),  # effmon killed: the server gets SIGTERM, never holds the port on
        )
    except OSError as exc:
        log.close()
        rec.finish("failed", f"could not start the server: {exc}")
        raise RecordError(f"could not start {argv[0]}: {exc.strerror or exc}", EXIT_ERROR) from None
    log.started()
    rec.set_meta(launched={"pid": process.pid, "started": identity(process.pid)})
    return Server(process, log_path, engine, log)


def serve(
    preset: Any,
    options: RecordOptions,
    *,
    load: LoadConfig | None = None,
    timeout_s: float = 600.0,
    dashboard: Callable[[Path, Interrupts], None] | None = None,
    on_open: Callable[[Recording], None] | None = None,
    drive: Callable[[Recording, LoadConfig, Callable[[], bool]], tuple[str, str, int]] | None = None,
    show_load: Callable[[LoadSummary], None] = lambda summary: None,
) -> int:
    """Launch, watch (``dashboard``, a load, or until Ctrl-C), stop; returns the exit status. ``show_load``: what
    to do with a load's summary (the CLI prints it)."""
    if preset.kind != "serve":
        raise RecordError(f"preset {preset.name} is a training preset: effmon run --preset {preset.name}", EXIT_USAGE)
    engine = preflight(preset)
    f = preset.fields
    try:
        model_dir = engine.prepare(f, True) if engine.prepare else None
    except QuantizeError as exc:
        raise RecordError(str(exc), EXIT_USAGE) from None
    argv = preset.command(model_dir=model_dir)
    rec, sources = _recording(preset, options, engine, model_dir, argv)
    say: Callable[[str], None] = (lambda msg: None) if options.quiet else (lambda msg: print(msg, file=sys.stderr))
    with Interrupts() as intr, rec:
        rec.open()
        rec.start()  # the sampler watches the server's process tree as soon as it exists
        server = _launch(rec, argv, model_dir, engine)
        log_path = server.log_path
        process = server.process
        rec.watch(process.pid)
        status, reason, code = "failed", "effmon serve stopped", EXIT_ERROR
        try:
            say(f"effmon serve: starting {preset.name}: {' '.join(redact_argv(argv))}")
            say(f"effmon serve: waiting until {preset.url}/health answers (log: {log_path})")
            if not _wait_healthy(server, preset.url, intr, timeout_s, say):
                status, reason, code = "interrupted", "stopped by the user while the server started", EXIT_INTERRUPTED
                return code
            if rec.sampler is not None and sources:
                rec.sampler.retry_now(sources[-1])
            model_id = model_dir or str(f.get("model"))
            say(f"effmon serve: ready: effmon load {preset.url} --model {model_id}")
            if on_open is not None:
                on_open(rec)
            if load is not None:
                load.url = preset.url
                load.model = load.model if load.model != "default" else model_id
                load.tokenizer = load.tokenizer or local_tokenizer(model_dir or str(f.get("model") or ""))
            status, reason, code = _watch(rec, server, intr, say, load, drive, dashboard, show_load)
            return code
        except RecordError as exc:
            status, reason = "failed", str(exc).splitlines()[0]
            raise
        finally:
            server.stop()
            rec.finish(status, reason, server.process.returncode)
            say(f"effmon serve: session {rec.path.stem} saved; report it with: effmon report {rec.path.stem}")
