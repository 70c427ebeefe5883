"""Record a session: open sources, run the sampler, write the store, end cleanly.

Three ways to decide what is watched and when the session ends:
``record_command`` (start a command, end with it, return its exit code),
``record_pid`` (watch a running process until it exits) and ``record_replay``
(play a trace file as a live machine).
"""

from __future__ import annotations

import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effmon import __version__
from effmon.clock import RealClock, ScaledClock, VirtualClock
from effmon.declare import CORE_ENTITIES, Row
from effmon.energy import EnergyIntegrator
from effmon.paths import sessions_dir
from effmon.plugins import Registry, Source, SourceOptions, SourceUnavailable, load_registry
from effmon.redact import redact_argv, redact_env
from effmon.sampler import Sampler
from effmon.store import SUFFIX, SessionWriter, StoreError, StoreFull

FLUSH_EVERY_S = 0.5

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_IOERR = 74
EXIT_NOT_FOUND = 127
EXIT_INTERRUPTED = 130


class RecordError(Exception):
    """A problem the user can fix; the message says how. ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


@dataclass
class RecordOptions:
    name: str | None = None
    tick_s: float = 0.1
    slow_s: float = 1.0
    host_s: float = 1.0
    max_bytes: int | None = None
    sources: list[str] | None = None
    """Source names to use; None: every live source registered."""
    quiet: bool = False
    on_open: Callable[[Recorder], None] | None = None
    registry: Registry | None = None
    stop: threading.Event | None = None
    """Set from another thread to end a --pid recording (after the dashboard closed, Ctrl-C)."""


class LiveState:
    """The latest reading of every entity instance, for views of a live session."""

    def __init__(self) -> None:
        self.latest: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def update(self, rows: list[Row], keys: dict[str, tuple[str, ...]]) -> None:
        with self.lock:
            for row in rows:
                key = tuple(row.values.get(k) for k in keys.get(row.entity, ()))
                self.latest[(row.entity, key)] = row.values
                self.counts[row.entity] = self.counts.get(row.entity, 0) + 1

    def of(self, entity: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(v) for (e, _), v in sorted(self.latest.items(), key=lambda kv: str(kv[0])) if e == entity]


class Recorder:
    def __init__(
        self,
        mode: str,
        options: RecordOptions,
        *,
        watched: list[int] | None = None,
        replay_path: str | None = None,
        slug: str = "session",
        extra_meta: dict[str, Any] | None = None,
    ):
        self.mode = mode
        self.options = options
        self.watched: list[int] = list(watched or [])
        self.registry = options.registry or load_registry()
        self.source_options = SourceOptions(
            tick_s=options.tick_s,
            slow_s=options.slow_s,
            host_s=options.host_s,
            watched_pids=lambda: list(self.watched),
            replay_path=replay_path,
        )
        self.sources: list[Source] = []
        self.notices: list[tuple[float, str, str]] = []
        self.pending: deque[Row] = deque()
        self.live = LiveState()
        self.integrator = EnergyIntegrator()
        self.writer: SessionWriter | None = None
        self.sampler: Sampler | None = None
        self.write_error: str | None = None
        self.rows_written = 0
        self.slug = slug
        self.extra_meta = extra_meta or {}
        self._key_cols: dict[str, tuple[str, ...]] = {}
        self._pending_notices: list[tuple[float, str, str]] = []

    # -- setup -------------------------------------------------------------------------
    def open(self, clock: Any = None, sources: list[Source] | None = None) -> Path:
        directory = sessions_dir(create=True)
        info_meta: dict[str, Any] = {}
        gpus: list[dict[str, Any]] = []
        unsupported: dict[str, str] = {}
        if sources is None:
            sources = self._make_sources()
        for source in sources:
            try:
                info = source.open()
            except SourceUnavailable as exc:
                self.notice("notice", f"{source.name}: {exc}")
                continue
            except Exception as exc:
                self.notice("error", f"{source.name} failed to open: {type(exc).__name__}: {exc}; skipped")
                continue
            self.sources.append(source)
            gpus.extend(info.gpus)
            unsupported.update(info.unsupported)
            info_meta.update(info.meta)
            for text in info.notices:
                self.notice("notice", f"{source.name}: {text}")
        if not self.sources:
            raise RecordError("no data source could be opened; nothing to record")
        entities = {e.name: e for e in CORE_ENTITIES}
        entities.update(self.registry.entities())
        self._key_cols = {name: e.keys for name, e in entities.items()}
        self.clock = clock or RealClock()
        started = self.clock.now() if not isinstance(self.clock, RealClock) else time.time()
        name = self._unique_name(directory, self.options.name or _session_name(self.slug, time.time()))
        self.path = directory / f"{name}{SUFFIX}"
        meta = {
            "name": name,
            "effmon_version": __version__,
            "mode": self.mode,
            "status": "recording",
            "started_at": started,
            "wall_started_at": time.time(),
            "ended_at": None,
            "exit_code": None,
            "host": {
                "hostname": socket.gethostname(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                **info_meta.pop("host", {}),
            },
            "recorder_pid": os.getpid(),
            "gpus": gpus,
            "unsupported": unsupported,
            "sources": [s.name for s in self.sources],
            "rates": {"tick_s": self.options.tick_s, "slow_s": self.options.slow_s, "host_s": self.options.host_s},
            "watched_pids": self.watched,
            **info_meta,
            **self.extra_meta,
        }
        try:
            self.writer = SessionWriter(self.path, entities.values(), meta, max_bytes=self.options.max_bytes)
        except (OSError, StoreError, Exception) as exc:
            raise RecordError(
                f"cannot create session file {self.path}: {exc}; set EFFMON_HOME to a writable directory"
            ) from None
        self.sampler = Sampler(self.sources, self.sink, clock=self.clock)
        if self.options.on_open:
            self.options.on_open(self)
        return self.path

    def _make_sources(self) -> list[Source]:
        names = self.options.sources
        specs = self.registry.sources
        if names is None:
            names = [n for n, s in specs.items() if s.live]
        for err in self.registry.load_errors:
            self.notice("error", err)
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise RecordError(
                f"unknown source(s): {', '.join(unknown)}; known: {', '.join(specs)} (see: effmon sources)", EXIT_USAGE
            )
        return [specs[n].factory(self.source_options) for n in names]

    @staticmethod
    def _unique_name(directory: Path, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise RecordError(f"session name {name!r}: use letters, digits, '.', '_' and '-'", EXIT_USAGE)
        candidate, n = name, 2
        while (directory / f"{candidate}{SUFFIX}").exists():
            candidate, n = f"{name}-{n}", n + 1
        return candidate

    # -- data path -----------------------------------------------------------------------
    def sink(self, rows: list[Row]) -> None:
        """Called on the sampler thread: finish energy rows, buffer for the writer, update live state."""
        self.integrator.feed(rows)
        self.pending.extend(rows)
        self.live.update(rows, self._key_cols)

    def notice(self, level: str, text: str) -> None:
        entry = (time.time(), level, text)
        self.notices.append(entry)
        self._pending_notices.append(entry)
        if not self.options.quiet or level == "error":
            print(f"effmon: {text}", file=sys.stderr)

    def flush(self) -> None:
        if self.writer is None or self.write_error:
            self.pending.clear()
            return
        batch: list[Row] = []
        while self.pending:
            batch.append(self.pending.popleft())
        notices, self._pending_notices = self._pending_notices, []
        meta: dict[str, Any] = {}
        for row in batch:
            if row.entity == "meta":  # a source adding to the session's metadata (model info, ranks)
                meta.update(row.values)
        try:
            if meta:
                self.writer.set_meta(**meta)
            self.writer.write(batch, self.sampler.status() if self.sampler else None, notices)
            self.rows_written += len(batch)
        except StoreFull as exc:
            limit = f" (the --max-size of {self.options.max_bytes} bytes)" if self.options.max_bytes else ""
            self.write_error = (
                f"session {self.path.name} is full{limit}: {exc}. Recording stopped; "
                f"what was recorded so far is kept. Free disk space or raise --max-size."
            )
            self.notice("error", self.write_error)
            if self.sampler:
                self.sampler.stop_event.set()
        except StoreError as exc:
            self.write_error = f"writing session {self.path.name} failed: {exc}; recording stopped, data so far kept"
            self.notice("error", self.write_error)
            if self.sampler:
                self.sampler.stop_event.set()

    # -- ending --------------------------------------------------------------------------
    def finish(self, status: str, exit_code: int | None = None, reason: str | None = None, **meta: Any) -> None:
        if self.sampler:
            self.sampler.stop()
            if not self.write_error:
                self.sampler.final_tick()
                for source in self.sources:
                    drain = getattr(source, "drain", None)
                    if drain is not None:
                        self.sink(drain())
        self.flush()
        for source in self.sources:
            try:
                source.close()
            except Exception:
                pass
        if self.writer is None:
            return
        ended = self.clock.now() if not isinstance(self.clock, RealClock) else time.time()
        if self.write_error:
            status = "failed"
            reason = self.write_error
        try:
            self.writer.set_meta(
                status=status,
                ended_at=ended,
                wall_ended_at=time.time(),
                exit_code=exit_code,
                end_reason=reason,
                energy_integrated_j=self.integrator.totals(),
                **meta,
            )
        except StoreError as exc:
            print(f"effmon: could not write the session's end ({exc}); the samples are kept", file=sys.stderr)
        self.writer.close()


def _session_name(slug: str, when: float) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", slug).strip("-.") or "session"
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}-{clean[:40]}"


def command_slug(argv: list[str]) -> str:
    for arg in argv[1:]:
        if arg.endswith(".py"):
            return Path(arg).stem
    if len(argv) > 2 and argv[1] == "-m":
        return argv[2].split(".")[-1]
    return Path(argv[0]).name


class _Interrupts:
    """Turns SIGINT/SIGTERM into counted flags while recording, and restores handlers after."""

    def __init__(self) -> None:
        self.count = 0
        self.signals: list[int] = []
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.signals.append(signum)
        self.event.set()

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def record_command(
    argv: list[str],
    options: RecordOptions,
    *,
    launch: bool = False,
    preset: Any = None,
    on_child: Callable[[subprocess.Popen[Any]], None] | None = None,
    capture_output: bool = False,
) -> int:
    """Run ``argv`` (or a preset's command) and record until it exits; returns its exit status.

    ``launch`` (``effmon run``): plugins add to the command's environment (the transformers
    instrumentation) and instrumented processes report into the session's own track directory."""
    import shutil

    if preset is None and not argv:
        raise RecordError("no command given; usage: effmon record -- COMMAND [ARGS...]", EXIT_USAGE)
    if preset is None and shutil.which(argv[0]) is None:
        hint = " (is it on PATH? give a path like ./train.sh, or prefix with python)" if "/" not in argv[0] else ""
        raise RecordError(f"command not found: {argv[0]}{hint}", EXIT_NOT_FOUND)
    meta: dict[str, Any] = {"cwd": os.getcwd(), "env": redact_env(dict(os.environ))}
    if preset is not None:
        meta.update(preset={"name": preset.name, "path": str(preset.path), **preset.train}, run_kind="training")
    slug = preset.name if preset is not None else command_slug(argv)
    recorder = Recorder("run" if launch else "command", options, slug=slug, extra_meta=meta)
    recorder.open()
    assert recorder.writer is not None and recorder.sampler is not None
    env = dict(os.environ)
    if launch:
        track_dir = recorder.path.with_suffix(".track")
        track_dir.mkdir(exist_ok=True)
        env["EFFMON_TRACK_DIR"] = str(track_dir)
        recorder.source_options.extra["track_dir"] = str(track_dir)
        recorder.registry.launch_env(env)
    if preset is not None:
        argv = preset.command(output_dir=str(recorder.path.with_suffix(".out")))
    recorder.writer.set_meta(command=redact_argv(argv))
    output: Any = None
    if capture_output:  # the dashboard owns the terminal: the command's output goes beside the session
        log_path = recorder.path.with_suffix(".log")
        output = open(log_path, "ab")  # noqa: SIM115 - closed when the command ends
        recorder.writer.set_meta(output_log=str(log_path))
    try:
        child = subprocess.Popen(argv, env=env, stdout=output, stderr=subprocess.STDOUT if output else None)
    except OSError as exc:
        recorder.finish("failed", None, f"could not start the command: {exc}")
        raise RecordError(f"could not start {argv[0]}: {exc.strerror or exc}", EXIT_NOT_FOUND) from None
    recorder.watched.append(child.pid)
    recorder.writer.set_meta(pid=child.pid, watched_pids=[child.pid])
    if on_child is not None:
        on_child(child)
    if not options.quiet:
        print(f"effmon: recording {recorder.path.name} while pid {child.pid} runs", file=sys.stderr)
    recorder.sampler.start()
    status, reason = "complete", "the command exited"
    with _Interrupts() as intr:
        handled = 0
        while child.poll() is None:
            recorder.flush()
            if intr.count > handled:
                handled = intr.count
                last = intr.signals[-1]
                if handled == 1:
                    status, reason = "interrupted", f"stopped by {signal.Signals(last).name}"
                    _forward(child, last)
                    print(
                        "effmon: stopping; waiting for the command to exit (Ctrl-C again to kill it)", file=sys.stderr
                    )
                else:
                    child.kill()
            try:
                child.wait(FLUSH_EVERY_S)
            except subprocess.TimeoutExpired:
                pass
    code = child.returncode
    if output is not None:
        output.close()
    exit_code = code if code >= 0 else 128 - code
    recorder.finish(status, exit_code, reason, exit_signal=(-code if code < 0 else None))
    _report_end(recorder, f"command exited with status {exit_code}", options)
    if launch and not recorder.live.counts.get("train_step"):
        print(
            "effmon: no training steps were reported: the command never created a transformers Trainer and "
            "does not use effmon.track (GPU and host metrics were recorded)",
            file=sys.stderr,
        )
    if recorder.write_error and exit_code == 0:
        return EXIT_IOERR
    return exit_code


def _forward(child: subprocess.Popen[Any], sig: int) -> None:
    """A terminal's Ctrl-C reaches the child too; a signal sent to effmon alone is passed on."""
    time.sleep(0.2)
    if child.poll() is None:
        try:
            child.send_signal(sig)
        except ProcessLookupError:
            pass


def record_pid(pid: int, options: RecordOptions) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
        name = proc.name()
    except psutil.NoSuchProcess:
        raise RecordError(f"no process with pid {pid}; check the pid (e.g. with `ps aux`)", EXIT_USAGE) from None
    except psutil.AccessDenied:
        raise RecordError(
            f"permission denied reading process {pid}: it belongs to another user; run effmon as that user or root",
            EXIT_USAGE,
        ) from None
    recorder = Recorder(
        "pid",
        options,
        watched=[pid],
        slug=f"pid{pid}-{name}",
        extra_meta={
            "command": redact_argv(cmdline),
            "pid": pid,
        },
    )
    recorder.open()
    assert recorder.sampler is not None
    if not options.quiet:
        print(f"effmon: recording {recorder.path.name} while pid {pid} ({name}) lives; Ctrl-C to stop", file=sys.stderr)
    recorder.sampler.start()
    started = time.monotonic()
    status, reason, code = "complete", f"process {pid} exited", 0
    with _Interrupts() as intr:
        while _alive(proc):
            recorder.flush()
            if intr.count or (options.stop is not None and options.stop.is_set()):
                status, reason, code = "interrupted", "stopped by the user", EXIT_INTERRUPTED
                break
            intr.event.wait(FLUSH_EVERY_S)
    recorder.finish(status, None, reason)
    if status == "complete" and time.monotonic() - started < 1.0 and not options.quiet:
        print(
            f"effmon: process {pid} exited after {time.monotonic() - started:.1f} s; little was recorded",
            file=sys.stderr,
        )
    _report_end(recorder, reason, options)
    return EXIT_IOERR if recorder.write_error else code


def _alive(proc: Any) -> bool:
    import psutil

    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def record_replay(
    trace_path: str,
    options: RecordOptions,
    *,
    speed: float = 1.0,
    as_fast_as_possible: bool = False,
    view: Callable[[Recorder, threading.Event], None] | None = None,
    slug: str | None = None,
    stop: threading.Event | None = None,
) -> int:
    from effmon.sources.replay import ReplaySource
    from effmon.trace import TraceError, load_trace

    try:
        trace = load_trace(trace_path)
    except TraceError as exc:
        raise RecordError(str(exc), EXIT_USAGE) from None
    recorder = Recorder(
        "replay",
        options,
        replay_path=str(trace_path),
        slug=slug or f"replay-{Path(trace_path).stem}",
        extra_meta={
            "command": ["effmon", "record", "--replay", str(trace_path)],
            "speed": None if as_fast_as_possible else speed,
        },
    )
    source = ReplaySource(recorder.source_options, trace)
    clock = VirtualClock(source.start_time) if as_fast_as_possible else ScaledClock(source.start_time, speed)
    recorder.open(clock=clock, sources=[source])
    assert recorder.sampler is not None
    sampler = recorder.sampler
    done = threading.Event()

    def run() -> None:
        try:
            sampler.run(until=source.finished)
        finally:
            done.set()

    thread = threading.Thread(target=run, name="effmon-sampler", daemon=True)
    thread.start()
    status, reason, code = "complete", "the trace ended", 0
    viewer = None
    if view is not None:
        viewer = threading.Thread(target=view, args=(recorder, done), daemon=True)
        viewer.start()
    with _Interrupts() as intr:
        while not done.is_set():
            recorder.flush()
            if intr.count or (stop is not None and stop.is_set()):
                status, reason, code = "interrupted", "stopped by the user", EXIT_INTERRUPTED
                break
            done.wait(FLUSH_EVERY_S)
    sampler.stop_event.set()
    thread.join(5)
    done.set()
    if viewer is not None:
        viewer.join(5)
    recorder.finish(status, None, reason)
    _report_end(recorder, reason, options)
    return EXIT_IOERR if recorder.write_error else code


def record_url(url: str, options: RecordOptions, *, window_s: float = 60.0, duration_s: float | None = None) -> int:
    """Watch a serving engine through its /metrics (plus this machine's GPUs) until Ctrl-C or ``duration_s``."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise RecordError(f"{url!r} is not an http(s) URL; e.g. --url http://127.0.0.1:8000", EXIT_USAGE)
    metrics_url = url if parsed.path.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics"
    registry = options.registry or load_registry()
    if "vllm_metrics" not in registry.sources:
        raise RecordError("the vLLM integration (effmon_vllm) is not installed; reinstall effmon", EXIT_ERROR)
    live = [n for n, s in registry.sources.items() if s.live]
    options.sources = (options.sources or live) + ["vllm_metrics"]
    options.registry = registry
    recorder = Recorder(
        "url",
        options,
        slug=f"attach-{parsed.netloc.replace(':', '-')}",
        extra_meta={"command": ["effmon", "attach", "--url", url], "run_kind": "inference"},
    )
    recorder.source_options.extra.update(metrics_url=metrics_url, window_s=window_s)
    recorder.open()
    assert recorder.sampler is not None
    if "vllm_metrics" not in [s.name for s in recorder.sources]:
        why = next((text for _, _, text in recorder.notices if text.startswith("vllm_metrics")), "")
        recorder.finish("failed", None, why)
        raise RecordError(why.removeprefix("vllm_metrics: ") or f"cannot read {metrics_url}", EXIT_USAGE)
    if not options.quiet:
        print(f"effmon: recording {recorder.path.name} from {metrics_url}; Ctrl-C to stop", file=sys.stderr)
    recorder.sampler.start()
    started = time.monotonic()
    status, reason, code = "complete", "stopped by the user", 0
    with _Interrupts() as intr:
        while not intr.count and not (options.stop is not None and options.stop.is_set()):
            if duration_s is not None and time.monotonic() - started >= duration_s:
                reason = f"--duration {duration_s:g} s reached"
                break
            recorder.flush()
            intr.event.wait(FLUSH_EVERY_S)
    recorder.finish(status, None, reason)
    _report_end(recorder, reason, options)
    return EXIT_IOERR if recorder.write_error else code


class BackgroundRecording:
    """Record this machine on background threads while something else (the dashboard) runs."""

    def __init__(self, options: RecordOptions, slug: str = "top", recorder: Recorder | None = None):
        self.recorder = recorder or Recorder("top", options, slug=slug, extra_meta={"command": ["effmon", "top"]})
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def start(self) -> Path:
        path = self.recorder.open()
        assert self.recorder.sampler is not None
        self.recorder.sampler.start()
        self._flusher = threading.Thread(target=self._flush_loop, name="effmon-flush", daemon=True)
        self._flusher.start()
        return path

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_EVERY_S):
            self.recorder.flush()

    def stop(
        self, status: str = "complete", reason: str = "the dashboard was closed", exit_code: int | None = None
    ) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(5)
        self.recorder.finish(status, exit_code, reason)


def _report_end(recorder: Recorder, what: str, options: RecordOptions) -> None:
    if options.quiet:
        return
    print(
        f"effmon: {what}; session {recorder.path.name} saved ({recorder.rows_written} rows). "
        f"See it with: effmon sessions show {recorder.path.name.removesuffix(SUFFIX)}",
        file=sys.stderr,
    )
