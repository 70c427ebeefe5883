"""Recording a session: one lifecycle object, used by every command that records.

``Recording`` opens the sources and the session file (``open``), samples on a background thread and
writes from one flusher thread (``start``), takes rows from outside the sampler (``add``: a load
generator's requests), and ends with a status and a reason (``finish``): stop sampling, one last read so
slow channels cover the end, a last write, the end written into the session. Used as a context manager,
an exception inside ends the session ``failed`` with the error, never leaves it ``recording``.

The drivers below decide what is watched and when a recording ends: ``record_command`` (start a command,
end with it, return its exit code), ``record_pid`` (watch a running process until it exits) and
``record_replay`` (play a trace file as a live machine).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effmon import __version__
from effmon.core.clock import RealClock, ScaledClock, VirtualClock
from effmon.core.declare import CORE_ENTITIES, Row
from effmon.core.energy import EnergyIntegrator
from effmon.core.interrupt import by_interrupt
from effmon.core.logpipe import RedactedLog
from effmon.core.paths import sessions_dir
from effmon.core.procs import Interrupts, die_with_parent, identity
from effmon.core.redact import REDACTED, redact_argv, redact_env, redact_text
from effmon.core.sampler import Sampler
from effmon.core.store import SUFFIX, SessionExists, SessionWriter, StoreError, StoreFull
from effmon.plugins import Registry, Source, SourceOptions, SourceUnavailable, load_registry

FLUSH_EVERY_S = 0.5
MAX_PENDING_ROWS = 20_000
"""More rows than this waiting for the writer: the thread that adds them writes them (a bound on memory)."""

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


@dataclass(frozen=True)
class RecordOptions:
    """How a session is recorded; fixed once built."""

    name: str | None = None
    tick_s: float = 0.1
    slow_s: float = 1.0
    host_s: float = 1.0
    max_bytes: int | None = None
    sources: tuple[str, ...] | None = None
    """Source names to use; None: every live source registered."""
    quiet: bool = False
    hung_after_s: float = 10.0
    """A read that has not returned after this long marks its channel hung (and the session says so)."""
    views: tuple[Callable[[Path, Callable[[str, str], None], LiveState], Callable[[], None]], ...] = ()
    """Started once the session file exists (each is given its path, a way to note something in the session (it
    tells the user itself, even under -q) and the live state of the latest readings) and stopped when the
    recording ends (each returns its stop): the Prometheus exporter of ``--prometheus``."""
    echo: Callable[[str], None] | None = None
    """Where a launched command's output goes, redacted, a line at a time (a terminal's progress bar prints it above
    itself); with it the output is also kept in NAME.log beside the session, as under a dashboard."""


class LiveState:
    """The latest reading of every entity instance, for views of a live session in this process."""

    def __init__(self) -> None:
        self.latest: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def update(self, rows: Sequence[Row], keys: dict[str, tuple[str, ...]]) -> None:
        with self.lock:
            for row in rows:
                key = tuple(row.values.get(k) for k in keys.get(row.entity, ()))
                self.latest[(row.entity, key)] = row.values
                self.counts[row.entity] = self.counts.get(row.entity, 0) + 1

    def of(self, entity: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(v) for (e, _), v in sorted(self.latest.items(), key=lambda kv: str(kv[0])) if e == entity]


@dataclass
class Ending:
    """How a recording ended: the session's status and reason, the exit status, and what to add to its metadata."""

    status: str
    reason: str
    code: int = 0
    exit_code: int | None = None
    """The watched command's own exit status, stored in the session (None: nothing was launched)."""
    meta: dict[str, Any] = field(default_factory=dict)


def stopped(intr: Interrupts) -> Ending:
    """The usual answer to a stop request: the session ends interrupted, effmon exits 130."""
    return Ending(
        "interrupted", f"stopped by {intr.last_name}" if intr.count else "stopped by the user", EXIT_INTERRUPTED
    )


@dataclass
class _Pending:
    rows: deque[Row] = field(default_factory=deque)
    notices: list[tuple[float, str, str]] = field(default_factory=list)


class Recording:
    def __init__(
        self,
        mode: str,
        options: RecordOptions,
        *,
        slug: str = "session",
        meta: dict[str, Any] | None = None,
        watched: Sequence[int] = (),
        registry: Registry | None = None,
        sources_with: dict[str, Any] | None = None,
        replay_path: str | None = None,
    ):
        """``sources_with``: fields of the sources' options (``SourceOptions``: metrics_url, busiest ...)."""
        self.mode = mode
        self.options = options
        self.slug = slug
        self.watched: list[int] = list(watched)
        self.registry = registry or load_registry()
        self.source_options = SourceOptions(
            tick_s=options.tick_s,
            slow_s=options.slow_s,
            host_s=options.host_s,
            watched_pids=lambda: list(self.watched),
            replay_path=replay_path,
            **(sources_with or {}),
        )
        self.meta: dict[str, Any] = dict(meta or {})
        self.sources: list[Source] = []
        self.notices: list[tuple[float, str, str]] = []
        self.live = LiveState()
        self.integrator = EnergyIntegrator()
        self.path: Path = Path()
        self.sampler: Sampler | None = None
        self.clock: Any = RealClock()
        self.write_error: str | None = None
        self.rows_written = 0
        self.finished = False
        self._writer: SessionWriter | None = None
        self._pending = _Pending()
        self._lock = threading.Lock()
        self._sink_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._hung: set[tuple[str, str]] = set()
        self._hung_since: dict[str, float] = {}  # "source.channel" -> seconds from the start when reads stopped
        self._hung_changed = False
        self.started_at = 0.0
        self._key_cols: dict[str, tuple[str, ...]] = {}
        self._stop_flusher = threading.Event()
        self._flusher: threading.Thread | None = None
        self._view_stops: list[Callable[[], None]] = []
        self.open_failures: dict[str, str] = {}
        """Sources that could not be opened, and why (by source name): a caller that needs one says why it failed."""

    # -- open ------------------------------------------------------------------------------
    def open(self, clock: Any = None, sources: list[Source] | None = None) -> Path:
        directory = sessions_dir(create=True)
        info_meta: dict[str, Any] = {}
        gpus: list[dict[str, Any]] = []
        unsupported: dict[str, str] = {}
        for source in sources if sources is not None else self._make_sources():
            try:
                info = source.open()
            except SourceUnavailable as exc:
                self.open_failures[source.name] = str(exc)
                self.notice("notice", f"{source.name}: {exc}")
                continue
            except Exception as exc:
                self.open_failures[source.name] = f"{source.name} failed to open: {type(exc).__name__}: {exc}"
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
        started = time.time() if isinstance(self.clock, RealClock) else self.clock.now()
        self.started_at = started
        wanted = self.options.name or session_name(self.slug, time.time())
        meta = {
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
            **self.meta,
        }
        self._writer = self._create(directory, wanted, entities.values(), meta)
        self.sampler = Sampler(self.sources, self.sink, clock=self.clock, hung_after_s=self.options.hung_after_s)
        return self.path

    def _create(self, directory: Path, wanted: str, entities: Any, meta: dict[str, Any]) -> SessionWriter:
        """The session file under the first free name (``NAME``, ``NAME-2`` ...), claimed atomically: two
        effmon processes started in the same second never share one."""
        for _ in range(1000):
            name = _unique_name(directory, wanted)
            self.path = directory / f"{name}{SUFFIX}"
            try:
                return SessionWriter(self.path, entities, {**meta, "name": name}, max_bytes=self.options.max_bytes)
            except SessionExists:
                continue  # taken between the look and the claim: the next name
            except (OSError, StoreError) as exc:
                raise RecordError(
                    f"cannot create session file {self.path}: {exc}; set EFFMON_HOME to a writable directory"
                ) from None
        raise RecordError(f"no free session name like {wanted} in {directory}")

    def _make_sources(self) -> list[Source]:
        specs = self.registry.sources
        names = list(self.options.sources) if self.options.sources is not None else self.registry.live_sources()
        for err in self.registry.load_errors:
            self.notice("error", err)
        unknown = [n for n in names if n not in specs]
        if unknown:
            raise RecordError(
                f"unknown source(s): {', '.join(unknown)}; known: {', '.join(specs)} (see: effmon sources)", EXIT_USAGE
            )
        return [specs[n].factory(self.source_options) for n in names]

    # -- running ---------------------------------------------------------------------------
    def start(self, sampler: bool = True) -> None:
        """Sample on a background thread (unless ``sampler`` is False: a replay drives it) and write
        twice a second from the flusher thread, the session's one writer."""
        if sampler and self.sampler is not None:
            self.sampler.start()
        self._flusher = threading.Thread(target=self._flush_loop, name="effmon-flush", daemon=True)
        self._flusher.start()
        if self._writer is not None:
            note = lambda level, text: self.notice(level, text, echo=False)  # noqa: E731 - the view says it itself
            self._view_stops = [view(self.path, note, self.live) for view in self.options.views]

    def _flush_loop(self) -> None:
        while True:
            self.flush()
            if self._stop_flusher.wait(FLUSH_EVERY_S):
                return

    def watch(self, pid: int) -> None:
        self.watched.append(pid)
        self.set_meta(pid=pid, watched_pids=list(self.watched))

    def sink(self, rows: list[Row]) -> None:
        """Rows from the sampler (or from outside it): finish energy rows, queue for the writer, update live state.
        A ``notice`` row (a source telling the user something mid-session) becomes a notice."""
        if any(row.entity == "notice" for row in rows):
            for row in rows:
                if row.entity == "notice":
                    text, t = str(row.values.get("text", "")), row.values.get("t")
                    if t is not None and self.started_at:
                        text += f" (at t+{t - self.started_at:.1f} s)"
                    self.notice(str(row.values.get("level", "notice")), text)
            rows = [row for row in rows if row.entity != "notice"]
        with self._sink_lock:  # each source samples on its own thread
            self.integrator.feed(rows)
            with self._lock:
                self._pending.rows.extend(rows)
                backlog = len(self._pending.rows)
            self.live.update(rows, self._key_cols)
        if backlog > MAX_PENDING_ROWS:
            self.flush()  # a replay as fast as possible outruns the flusher: the producer writes, memory stays bounded

    add = sink

    def set_meta(self, **meta: Any) -> None:
        if self._writer is None or self.write_error:
            self.meta.update(meta)
            return
        try:
            self._writer.set_meta(**meta)
        except StoreError as exc:
            self._failed_write(exc)

    def notice(self, level: str, text: str, echo: bool = True) -> None:
        """Note something in the session (and say it on stderr unless quiet, or ``echo`` is off: the caller
        has said it already)."""
        entry = (time.time(), level, text)
        self.notices.append(entry)
        with self._lock:
            self._pending.notices.append(entry)
        if echo and (not self.options.quiet or level == "error"):
            print(f"effmon: {text}", file=sys.stderr)

    def flush(self) -> None:
        """Write what is pending, in one transaction; batches are written in the order they were taken."""
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending.rows = list(self._pending.rows), deque()
            notices, self._pending.notices = self._pending.notices, []
        if self._writer is None or self.write_error:
            return
        meta: dict[str, Any] = {}
        for row in batch:
            if row.entity == "meta":  # a source adding to the session's metadata (model info, ranks)
                meta.update(row.values)
        status = self.sampler.status() if self.sampler else None
        if status:
            notices = notices + self._hung_notices(status)
            if self._hung_changed:
                meta["hung"] = dict(self._hung_since)
        try:
            if meta:
                self._writer.set_meta(**meta)
            self._write(batch, status, notices)
        except StoreError as exc:
            self._failed_write(exc)

    def _hung_notices(self, status: list[dict[str, Any]]) -> list[tuple[float, str, str]]:
        """A channel whose read stopped returning (a hung driver call), and one that came back: said once each."""
        out: list[tuple[float, str, str]] = []
        self._hung_changed = False
        for st in status:
            key = (st["source"], st["channel"])
            if st["state"] == "hung" and key not in self._hung:
                self._hung.add(key)
                since = st.get("reading_since")
                rel = since - self.started_at if since is not None else None
                self._hung_since[f"{key[0]}.{key[1]}"] = rel if rel is not None else -1.0
                at = f" at t+{rel:.1f} s" if rel is not None else ""
                out.append(
                    self._note(
                        "error",
                        f"{key[0]}.{key[1]}: a read has not returned since{at} (a hung "
                        "driver or server?); its readings stop there, the other sources go on",
                    )
                )
            elif st["state"] != "hung" and key in self._hung:
                self._hung.discard(key)
                self._hung_since.pop(f"{key[0]}.{key[1]}", None)
                out.append(self._note("notice", f"{key[0]}.{key[1]}: reads return again"))
            else:
                continue
            self._hung_changed = True
        return out

    def _note(self, level: str, text: str) -> tuple[float, str, str]:
        entry = (time.time(), level, text)
        self.notices.append(entry)
        if not self.options.quiet or level == "error":
            _say(f"effmon: {text}")
        return entry

    def _write(self, batch: list[Row], status: Any, notices: Sequence[tuple[float, str, str]]) -> None:
        """One transaction; when the session is full, what still fits is written (halves, then quarters ...)."""
        assert self._writer is not None
        try:
            self._writer.write(batch, status, notices)
            self.rows_written += len(batch)
        except StoreFull:
            if len(batch) < 2:
                raise
            half = len(batch) // 2
            self._write(batch[:half], status, notices)
            self._write(batch[half:], None, ())

    def _failed_write(self, exc: StoreError) -> None:
        if isinstance(exc, StoreFull):
            limit = f" (the --max-size of {self.options.max_bytes} bytes)" if self.options.max_bytes else ""
            self.write_error = (
                f"session {self.path.name} is full{limit}: {exc}. Recording stopped; "
                f"what was recorded so far is kept. Free disk space or raise --max-size."
            )
        else:
            self.write_error = f"writing session {self.path.name} failed: {exc}; recording stopped, data so far kept"
        self.notice("error", self.write_error)
        if self.sampler:
            self.sampler.stop_event.set()

    # -- waiting -----------------------------------------------------------------------------
    def run_until(
        self,
        intr: Interrupts,
        *,
        done: Callable[[], Ending | None] = lambda: None,
        stop: threading.Event | None = None,
        on_stop: Callable[[Interrupts], Ending | None] = stopped,
        wait: Callable[[float], Any] | None = None,
        every_s: float = FLUSH_EVERY_S,
        cleanup: Callable[[], None] | None = None,
    ) -> Ending:
        """Wait until what is watched ends (``done`` returns an Ending) or a stop is asked for (a signal counted by
        ``intr``, or ``stop`` set), then finish the session with that ending and return it. Each new stop request
        goes to ``on_stop`` once: an Ending ends the recording, None keeps waiting (a command asked to exit: its own
        exit is the ending, or a second Ctrl-C). ``wait`` (default: the stop requests' event) paces the loop;
        ``cleanup`` runs once waiting is over, before the session is finished (whatever ended it). An exception
        inside still ends the session through the context manager (failed, or interrupted)."""
        try:
            ending = self._wait(intr, done, stop, on_stop, wait, every_s)
        finally:
            if cleanup is not None:
                cleanup()
        self.finish(ending.status, ending.reason, ending.exit_code, **ending.meta)
        return ending

    def _wait(
        self,
        intr: Interrupts,
        done: Callable[[], Ending | None],
        stop: threading.Event | None,
        on_stop: Callable[[Interrupts], Ending | None],
        wait: Callable[[float], Any] | None,
        every_s: float,
    ) -> Ending:
        handled = 0
        ending: Ending | None = None
        while ending is None:
            ending = done()
            if ending is not None:
                break
            asked = intr.count + (1 if stop is not None and stop.is_set() and not intr.count else 0)
            if asked > handled:
                handled = asked
                ending = on_stop(intr)
                if ending is not None:
                    break
            if wait is not None:
                wait(every_s)
            elif asked:
                time.sleep(every_s)  # the event stays set once a stop came: do not spin on it
            else:
                intr.event.wait(every_s)
        return ending

    # -- ending ----------------------------------------------------------------------------
    def finish(self, status: str, reason: str | None = None, exit_code: int | None = None, **meta: Any) -> None:
        """Stop sampling and writing, and write the session's end. Safe to call twice (the first wins)."""
        if self.finished:
            return
        self.finished = True
        if self.sampler:
            self.sampler.stop()
            if not self.write_error:
                self.sampler.final_tick()
                for source in self.sources:
                    drain = getattr(source, "drain", None)
                    if drain is not None:
                        self.sink(drain())
        self._stop_flusher.set()
        if self._flusher is not None:
            self._flusher.join(10)
        self.flush()
        self._close_sources()
        if self._writer is None:
            return
        if self.write_error:
            status, reason = "failed", self.write_error
        elif self._hung:
            stuck = ", ".join(f"{s}.{c}" for s, c in sorted(self._hung))
            reason = f"{reason or status}; {stuck} stopped answering during the session (its readings end there)"
        try:
            self._writer.set_meta(
                status=status,
                ended_at=time.time() if isinstance(self.clock, RealClock) else self.clock.now(),
                wall_ended_at=time.time(),
                exit_code=exit_code,
                end_reason=reason,
                energy_integrated_j=self.integrator.totals(),
                **meta,
            )
        except StoreError as exc:
            print(f"effmon: could not write the session's end ({exc}); the samples are kept", file=sys.stderr)
        self._writer.close()
        for stop in self._view_stops:
            stop()

    def _close_sources(self) -> None:
        """Close each source, at most a few seconds each; one with a hung call is not touched (closing a driver
        while a call of it hangs can hang too)."""
        hung = {source for source, _ in self._hung}
        for source in self.sources:
            if source.name in hung:
                continue
            closer = threading.Thread(target=_quietly, args=(source.close,), name="effmon-close", daemon=True)
            closer.start()
            closer.join(5.0)

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and not self.finished:
            why = "interrupted" if by_interrupt(exc) else "failed"
            self.finish(why, f"{exc_type.__name__}: {exc}" if why == "failed" else "stopped by the user")

    def report_end(self, what: str) -> None:
        if self.options.quiet:
            return
        print(
            f"effmon: {what}; session {self.path.name} saved ({self.rows_written} rows). "
            f"See it with: effmon sessions show {self.path.name.removesuffix(SUFFIX)}",
            file=sys.stderr,
        )


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:
        pass


def _say(text: str) -> None:
    """A message on stderr that never fails (the terminal may be gone)."""
    try:
        print(text, file=sys.stderr)
    except (OSError, ValueError):
        pass


def session_name(slug: str, when: float) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", redact_text(slug).replace(REDACTED, "redacted")).strip("-.") or "session"
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}-{clean[:40]}"


def _unique_name(directory: Path, name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise RecordError(f"session name {name!r}: use letters, digits, '.', '_' and '-'", EXIT_USAGE)
    candidate, n = name, 2
    while (directory / f"{candidate}{SUFFIX}").exists():
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def command_slug(argv: Sequence[str]) -> str:
    for arg in argv[1:]:
        if arg.endswith(".py"):
            return Path(arg).stem
    if len(argv) > 2 and argv[1] == "-m":
        return argv[2].split(".")[-1]
    return Path(argv[0]).name


@dataclass
class Launch:
    """What a recorded command runs with, decided once the session exists (``effmon run`` puts the
    instrumentation's files beside the session)."""

    argv: list[str]
    env: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)


def record_command(
    argv: list[str],
    options: RecordOptions,
    *,
    mode: str = "command",
    slug: str | None = None,
    meta: dict[str, Any] | None = None,
    prepare: Callable[[Recording], Launch] | None = None,
    on_open: Callable[[Recording], None] | None = None,
    on_child: Callable[[subprocess.Popen[Any]], None] | None = None,
    capture_output: bool = False,
    registry: Registry | None = None,
    interrupts: Interrupts | None = None,
) -> int:
    """Run ``argv`` (or what ``prepare`` decides once the session exists) and record until it exits;
    returns its exit status. ``interrupts``: the stop requests of a dashboard on the main thread."""
    import shutil

    if prepare is None and not argv:
        raise RecordError("no command given; usage: effmon record -- COMMAND [ARGS...]", EXIT_USAGE)
    if argv and shutil.which(argv[0]) is None:
        hint = " (is it on PATH? give a path like ./train.sh, or prefix with python)" if "/" not in argv[0] else ""
        raise RecordError(f"command not found: {argv[0]}{hint}", EXIT_NOT_FOUND)
    meta = {"cwd": os.getcwd(), "env": redact_env(dict(os.environ)), **(meta or {})}
    rec = Recording(mode, options, slug=slug or command_slug(argv or ["command"]), meta=meta, registry=registry)
    with interrupts or Interrupts() as intr, rec:
        rec.open()
        if intr.count:  # stopped while effmon was starting: never start the command
            rec.finish("interrupted", f"stopped by {intr.last_name} before the command started", EXIT_INTERRUPTED)
            rec.report_end("stopped before the command started")
            return EXIT_INTERRUPTED
        launch = prepare(rec) if prepare is not None else Launch(argv, dict(os.environ))
        rec.set_meta(command=redact_argv(launch.argv), **launch.meta)
        child, log = _start_child(rec, launch, capture_output, options.echo)
        rec.watch(child.pid)
        if on_open is not None:
            on_open(rec)
        if on_child is not None:
            on_child(child)
        if not options.quiet:
            print(f"effmon: recording {rec.path.name} while pid {child.pid} runs", file=sys.stderr)
        rec.start()
        waiting = _ChildWait(child, intr)
        ending = rec.run_until(
            intr, done=waiting.done, on_stop=waiting.on_stop, wait=waiting.wait, cleanup=log.close if log else None
        )
        exit_code = ending.code
    rec.report_end(f"command exited with status {exit_code}")
    if rec.write_error and exit_code == 0:
        return EXIT_IOERR
    return exit_code


def _start_child(
    rec: Recording, launch: Launch, capture_output: bool, echo: Callable[[str], None] | None = None
) -> tuple[subprocess.Popen[Any], RedactedLog | None]:
    """The command, started; with ``capture_output`` (the dashboard owns the terminal) or an ``echo`` (a progress
    bar does) its output goes to NAME.log beside the session, through effmon, redacted (and to ``echo``)."""
    log: RedactedLog | None = None
    env = launch.env
    if capture_output or echo is not None:
        log = RedactedLog(rec.path.with_suffix(".log"), echo=echo)
        rec.set_meta(output_log=str(log.path))
        if echo is not None:
            env = {**env, "PYTHONUNBUFFERED": "1"}  # a pipe, not a terminal: Python would hold its lines back
    try:
        child = subprocess.Popen(
            launch.argv,
            env=env,
            stdin=subprocess.DEVNULL if capture_output else None,  # the dashboard reads the keyboard
            stdout=log.fd if log else None,
            stderr=subprocess.STDOUT if log else None,
            preexec_fn=die_with_parent(),  # effmon killed: the job gets SIGTERM, never runs on unwatched
        )
    except OSError as exc:
        if log is not None:
            log.close()
        rec.finish("failed", f"could not start the command: {exc}")
        raise RecordError(f"could not start {launch.argv[0]}: {exc.strerror or exc}", EXIT_NOT_FOUND) from None
    if log is not None:
        log.started()
    rec.set_meta(launched={"pid": child.pid, "started": identity(child.pid)})
    return child, log


class _ChildWait:
    """A launched command, waited for: the first stop request is passed on to it, a second kills it; its own exit
    is the ending (a command that exits non-zero ends its session ``failed``)."""

    def __init__(self, child: subprocess.Popen[Any], intr: Interrupts):
        self.child, self.intr = child, intr
        self.asked = False

    def wait(self, seconds: float) -> None:
        try:
            self.child.wait(seconds)
        except subprocess.TimeoutExpired:
            pass

    def on_stop(self, intr: Interrupts) -> None:
        if not self.asked:
            self.asked = True
            _forward(self.child, intr.signals[-1] if intr.signals else signal.SIGTERM)
            _say("effmon: stopping; waiting for the command to exit (Ctrl-C again to kill it)")
        else:
            self.child.kill()

    def done(self) -> Ending | None:
        child, intr = self.child, self.intr
        if child.poll() is None:
            return None
        code = child.returncode
        if not self.asked and code < 0 and -code in Interrupts.SIGNALS and not intr.count:
            intr.event.wait(0.3)  # the terminal's signal (Ctrl-C, a hangup) reached the job first; effmon's is coming
        exit_code = code if code >= 0 else 128 - code
        meta = {"exit_signal": -code if code < 0 else None}
        if self.asked or intr.count:
            return Ending("interrupted", f"stopped by {intr.last_name}", exit_code, exit_code, meta)
        if code == 0:
            return Ending("complete", "the command exited", 0, 0, meta)
        why = f"the command exited with status {code}" if code > 0 else f"the command was killed by signal {-code}"
        return Ending("failed", why, exit_code, exit_code, meta)


def _forward(child: subprocess.Popen[Any], sig: int) -> None:
    """A terminal's Ctrl-C reaches the child too; a signal sent to effmon alone is passed on."""
    time.sleep(0.2)
    if child.poll() is None:
        try:
            child.send_signal(sig)
        except ProcessLookupError:
            pass


def _one_job(pid: int) -> None:
    """``attach 1`` (or a shell, a scheduler) with several instrumented jobs below it would record them all as one:
    ask which, with each one's command."""
    import psutil

    from effmon.core.fmt import short_command
    from effmon.sources.track import instrumented_jobs

    jobs = instrumented_jobs(pid)
    if len(jobs) <= 1:
        return
    lines = []
    for job in jobs:
        try:
            lines.append(f"  effmon attach {job}    # {short_command(redact_argv(psutil.Process(job).cmdline()))}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise RecordError(
        f"process {pid} has {len(jobs)} instrumented jobs below it; attach to the one to watch:\n" + "\n".join(lines),
        EXIT_USAGE,
    )


def record_pid(
    pid: int,
    options: RecordOptions,
    *,
    stop: threading.Event | None = None,
    on_open: Callable[[Recording], None] | None = None,
    interrupts: Interrupts | None = None,
) -> int:
    """Watch a running process (and its children) until it exits, or until Ctrl-C or ``stop``."""
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
    _one_job(pid)
    rec = Recording(
        "pid", options, watched=[pid], slug=f"pid{pid}-{name}", meta={"command": redact_argv(cmdline), "pid": pid}
    )
    with interrupts or Interrupts() as intr, rec:
        rec.open()
        if on_open is not None:
            on_open(rec)
        if not options.quiet:
            print(f"effmon: recording {rec.path.name} while pid {pid} ({name}) lives; Ctrl-C to stop", file=sys.stderr)
            for line in attach_notes(proc, rec.registry):
                print(f"effmon: {line}", file=sys.stderr)
        rec.start()
        started = time.monotonic()

        def exited() -> Ending | None:
            return None if _alive(proc) else Ending("complete", f"process {pid} exited")

        def detach(intr: Interrupts) -> Ending:  # watching stops; the process is never touched
            code = EXIT_INTERRUPTED if intr.count else 0
            return Ending("complete", f"stopped watching; process {pid} goes on", code, meta={"detached": True})

        ending = rec.run_until(intr, done=exited, stop=stop, on_stop=detach)
    if not ending.meta.get("detached") and time.monotonic() - started < 1.0 and not options.quiet:
        print(
            f"effmon: process {pid} exited after {time.monotonic() - started:.1f} s; little was recorded",
            file=sys.stderr,
        )
    rec.report_end(ending.reason)
    return EXIT_IOERR if rec.write_error else ending.code


def attach_notes(proc: Any, registry: Any) -> list[str]:
    """What ``effmon attach`` can and cannot see of a process it did not start, said at once, with how to get the
    rest: steps come from ``effmon.track`` files when the job writes them, else from a plugin (a Trainer's own state
    files), else not at all."""
    import psutil

    from effmon.track import track_location, track_path

    lines = ["GPU, power, memory and host figures: yes (NVML and psutil, any process)"]
    try:
        tree = [proc, *proc.children(recursive=True)]
        tracked = False
        for p in tree:
            folder = track_location(p.environ(), p.uids().effective)[1]
            tracked = tracked or os.path.exists(track_path(p.pid, folder))
        cmdline, cwd = proc.cmdline(), proc.cwd()
    except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
        return lines
    if tracked:
        lines.append("steps, tokens and loss: yes, the job reports through effmon.track (its whole history)")
        return lines
    lines.append(
        "steps, tokens and step times: no - the job was not started by effmon and does not use effmon.track. For "
        "them, start it with `effmon run -- COMMAND` (a transformers Trainer needs no change) or add "
        "`import effmon.track as et` to the loop (README: Training)"
    )
    return lines + registry.attach_notes(proc.pid, cmdline, cwd)


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
    view: Callable[[Recording, threading.Event], None] | None = None,
    slug: str | None = None,
    stop: threading.Event | None = None,
    on_open: Callable[[Recording], None] | None = None,
    interrupts: Interrupts | None = None,
) -> int:
    """Play a trace file as a live machine into a new session."""
    from effmon.sources.replay import ReplaySource
    from effmon.sources.trace import TraceError, load_trace

    try:
        trace = load_trace(trace_path)
    except TraceError as exc:
        raise RecordError(str(exc), EXIT_USAGE) from None
    rec = Recording(
        "replay",
        options,
        replay_path=str(trace_path),
        slug=slug or f"replay-{Path(trace_path).stem}",
        meta={
            "command": ["effmon", "record", "--replay", str(trace_path)],
            "speed": None if as_fast_as_possible else speed,
        },
    )
    source = ReplaySource(rec.source_options, trace)
    clock = VirtualClock(source.start_time) if as_fast_as_possible else ScaledClock(source.start_time, speed)
    with interrupts or Interrupts() as intr, rec:
        rec.open(clock=clock, sources=[source])
        if on_open is not None:
            on_open(rec)
        assert rec.sampler is not None
        sampler = rec.sampler
        done = threading.Event()

        def run() -> None:
            try:
                sampler.run(until=source.finished)
            finally:
                done.set()

        thread = threading.Thread(target=run, name="effmon-sampler", daemon=True)
        rec.start(sampler=False)
        thread.start()
        viewer = None
        if view is not None:
            viewer = threading.Thread(target=view, args=(rec, done), daemon=True)
            viewer.start()

        def cleanup() -> None:
            sampler.stop_event.set()
            thread.join(5)
            done.set()
            if viewer is not None:
                viewer.join(5)

        ending = rec.run_until(
            intr,
            done=lambda: Ending("complete", "the trace ended") if done.is_set() else None,
            stop=stop,
            wait=done.wait,
            cleanup=cleanup,
        )
    rec.report_end(ending.reason)
    return EXIT_IOERR if rec.write_error else ending.code


def record_machine(
    options: RecordOptions, view: Callable[[Path, Interrupts], None], *, sources_with: dict[str, Any] | None = None
) -> Path:
    """Record this machine while ``view`` (the dashboard of ``effmon top``) runs; the session ends when the view
    is closed (complete) or a stop request ends it (interrupted). Returns the session's path."""
    rec = Recording("top", options, slug="top", meta={"command": ["effmon", "top"]}, sources_with=sources_with)
    with Interrupts() as intr, rec:
        path = rec.open()
        for _, _level, text in rec.notices:
            _say(f"effmon: {text}")
        rec.start()
        view(path, intr)
        rec.run_until(intr, done=lambda: None if intr.count else Ending("complete", "the dashboard was closed"))
    return path
