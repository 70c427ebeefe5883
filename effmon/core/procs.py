"""effmon owns what it launches, and every stop becomes a recorded end (docs/reliability.md).

* ``Interrupts``: SIGINT, SIGTERM and SIGHUP become counted stop requests (never a ``KeyboardInterrupt`` in the
  middle of writing a session); one instance is shared by the thread that records and the dashboard that shows
  it. A hangup (the terminal or SSH connection is gone) also points standard input and output at /dev/null, so
  the messages that follow cannot fail on a dead terminal. A signal that whoever started effmon set to be ignored
  (``nohup``: SIGHUP; a script's ``cmd &``: SIGINT) stays ignored, by effmon and by what it launches, as the Unix
  convention (and Python itself, for SIGINT) has it: ``nohup effmon run ... &`` survives the logout it was asked to.
* ``die_with_parent``: a launched job or server gets SIGTERM from the kernel if effmon dies hard (``kill -9``,
  OOM): on Linux, through the parent-death signal.
* ``identity`` / ``still_running``: a process recognised by pid *and* start time, so a crashed recorder's job
  can be named as left behind without mistaking a reused pid for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1


class Interrupts:
    """Turns SIGINT, SIGTERM and SIGHUP into counted flags while entered (re-entrant, main thread only), and
    restores the handlers. ``callbacks`` run in the handler with the signal number: keep them to a flag or a
    ``loop.call_soon_threadsafe``."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.count = 0
        self.signals: list[int] = []
        self.event = threading.Event()
        self.callbacks: list[Callable[[int], None]] = []
        self.hung_up = False
        self._old: dict[int, Any] = {}
        self._depth = 0

    def __enter__(self) -> Interrupts:
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = catch(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.signals.append(signum)
        if signum == signal.SIGHUP and not self.hung_up:
            self.hung_up = True
            _away_from_the_terminal()
        self.event.set()
        for callback in list(self.callbacks):
            with contextlib.suppress(Exception):
                callback(signum)

    def request(self, signum: int = signal.SIGTERM) -> None:
        """A stop asked for from inside effmon (the dashboard's quit, a test): as if ``signum`` had come."""
        self._handle(signum, None)

    @property
    def last_name(self) -> str:
        return signal.Signals(self.signals[-1]).name if self.signals else "a signal"

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self._old.clear()


def catch(sig: int, handler: Callable[[int, Any], None]) -> Any:
    """``signal.signal(sig, handler)`` unless ``sig`` is ignored (inherited from nohup, or a script's ``&``): then
    it stays ignored, for effmon and for the commands it starts. Returns the disposition to restore, as
    ``signal.signal`` does (``SIG_IGN`` when nothing changed)."""
    if signal.getsignal(sig) == signal.SIG_IGN:
        return signal.SIG_IGN
    return signal.signal(sig, handler)


def _away_from_the_terminal() -> None:
    """Standard input, output and error to /dev/null: after a hangup every write to the terminal would fail."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
    os.close(null)


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when effmon dies, however it dies (Linux;
    None elsewhere). Prepared in effmon, so the child makes one system call between fork and exec. The signal
    follows the thread that started the child: start it from a thread that outlives it (effmon's own waiting
    thread does)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # effmon died between the fork and the prctl
            os.kill(os.getpid(), sig)

    return preexec


def identity(pid: int) -> float | None:
    """The process's start time (seconds since the epoch), which with its pid names it uniquely."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def still_running(pid: int | None, started: float | None) -> bool:
    """Is the process that had this pid and start time still running (not a zombie, not a reused pid)?"""
    if not pid or started is None:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - started) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
