"""Jobs that outlive the terminal on purpose: ``--detach`` (run, record, serve) and ``effmon stop``.

``--detach`` starts effmon again in its own session (no terminal, no SIGHUP when SSH drops), recording headless
with the job's output kept in NAME.log, and returns once the session exists with its name. The dashboard
re-attaches with ``effmon replay NAME`` (it follows a live session); ``effmon stop NAME`` asks the recorder to
stop, which stops the job and records the end. The job still dies with its recorder (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from effmon.cli.common import Handler, err, positive

DETACHED_ENV = "EFFMON_DETACHED_FD"
"""Set for the detached effmon: the descriptor on which it announces its session's name."""


def register(sub: Any) -> dict[str, Handler]:
    stop = sub.add_parser(
        "stop",
        help="stop a recording (a --detach job, or one in another terminal): the job ends, the session is kept",
        description="Ask the effmon that records a session to stop: it passes SIGTERM on to the job it launched "
        "(a training run, a server), waits for it, and records the end. For a session whose recorder crashed, "
        "stops the job it left behind.",
        epilog="examples:\n  effmon run --detach --preset lora-tiny      # prints the session name\n"
        "  effmon stop last\n  effmon stop 20261123-101010-lora-tiny --timeout 120",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stop.add_argument("session", help="name, unique prefix, path, or 'last'")
    stop.add_argument(
        "--timeout", type=positive, default=60.0, metavar="S", help="how long to wait for the end (default: 60 s)"
    )
    return {"stop": cmd_stop}


def detach(argv: list[str], what: str) -> int:
    """Start ``effmon ARGV`` detached; return once it has opened its session (0) or failed (its status)."""
    from effmon.core.paths import sessions_dir

    print(f"effmon: starting {what} in the background ...", file=sys.stderr)
    read_end, write_end = os.pipe()
    err_fd, err_path = tempfile.mkstemp(prefix=".effmon-detach-", suffix=".err", dir=sessions_dir(create=True))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "effmon", *argv],
            stdin=subprocess.DEVNULL,
            stdout=err_fd,
            stderr=err_fd,
            pass_fds=(write_end,),
            start_new_session=True,  # no controlling terminal: an SSH drop sends it nothing
            env=dict(os.environ, **{DETACHED_ENV: str(write_end)}),
        )
    finally:
        os.close(write_end)
        os.close(err_fd)
    with os.fdopen(read_end) as announced:
        name = announced.readline().strip()
    try:
        if not name:  # it ended before its session existed: its own error says why
            code = proc.wait()
            with open(err_path, encoding="utf-8", errors="replace") as f:
                sys.stderr.write(f.read())
            return code or 1
    finally:
        os.unlink(err_path)
    print(name)
    print(
        f"effmon: {what} goes on in the background (effmon pid {proc.pid}), recorded into session {name}\n"
        f"  watch it:   effmon replay {name}\n"
        f"  stop it:    effmon stop {name}\n"
        f"  its output: {sessions_dir() / name}.log",
        file=sys.stderr,
    )
    return 0


def detached() -> bool:
    return DETACHED_ENV in os.environ


def announce(recording: Any) -> None:
    """In the detached effmon, once its session exists: name it to the waiting ``detach`` and let go of the
    terminal's remnants (its messages are in the session's notices from now on)."""
    fd = int(os.environ.pop(DETACHED_ENV))
    try:
        os.write(fd, f"{recording.path.stem}\n".encode())
    finally:
        os.close(fd)
    null = os.open(os.devnull, os.O_RDWR)
    for target in (1, 2):
        os.dup2(null, target)
    os.close(null)


def relaunch_args(args: argparse.Namespace, command: list[str]) -> list[str]:
    """The arguments effmon was given, without ``--detach``, for the detached effmon."""
    own = [a for a in args.argv if a != "--detach"]
    return own + (["--", *command] if command else [])


def cmd_stop(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.core.sessions import entry, resolve

    path = resolve(args.session)
    e = entry(path)
    if e.error:
        return err(f"{e.name}: {e.error}", 2)
    if e.left_behind is not None:
        return _stop_left_behind(e, args.timeout)
    if e.state != "live":
        print(f"effmon: session {e.name} is not recording ({e.state}); nothing to stop", file=sys.stderr)
        return 0
    pid = int(e.meta["recorder_pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        return err(f"session {e.name} is recorded by pid {pid} of another user; stop it as that user", 1)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        e = entry(path)
        if e.state != "live":
            reason = e.meta.get("end_reason")
            print(f"effmon: session {e.name} ended: {e.state}" + (f" ({reason})" if reason else ""), file=sys.stderr)
            return 0
        time.sleep(0.2)
    return err(
        f"session {e.name} is still recording after {args.timeout:g} s (its job may be slow to stop); "
        f"wait longer with --timeout, or kill the recorder (pid {pid}): the job dies with it",
        1,
    )


def _stop_left_behind(e: Any, timeout: float) -> int:
    """A crashed recorder's job: SIGTERM, then SIGKILL after ``timeout``."""
    from effmon.core.procs import still_running

    launched = e.meta["launched"]
    pid = int(launched["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while still_running(pid, launched.get("started")) and time.monotonic() < deadline:
        time.sleep(0.2)
    if still_running(pid, launched.get("started")):
        os.kill(pid, signal.SIGKILL)
        print(f"effmon: job {pid} of session {e.name} did not stop within {timeout:g} s: killed", file=sys.stderr)
    else:
        print(f"effmon: job {pid} of session {e.name} (its recorder had crashed) stopped", file=sys.stderr)
    return 0
