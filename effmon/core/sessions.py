"""Finding and describing recorded sessions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effmon.core.paths import sessions_dir
from effmon.core.procs import still_running
from effmon.core.store import SUFFIX, SessionReader, StoreError


class SessionNotFound(Exception):
    pass


@dataclass
class SessionEntry:
    path: Path
    name: str
    meta: dict[str, Any]
    start: float | None
    end: float | None
    size: int
    error: str | None = None

    @property
    def state(self) -> str:
        """'complete', 'interrupted', 'failed', 'live' (being recorded) or 'crashed' (recorder died)."""
        status = self.meta.get("status")
        if status == "recording":
            return "live" if _recorder_alive(self.meta) else "crashed"
        if status == "complete" and self.meta.get("detached"):
            return "complete (detached)"
        return str(status or "unknown")

    @property
    def left_behind(self) -> int | None:
        """The pid of the job effmon launched, when its recorder crashed and the job still runs."""
        launched = self.meta.get("launched") or {}
        if self.state != "crashed" or not still_running(launched.get("pid"), launched.get("started")):
            return None
        return int(launched["pid"])

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start


def _recorder_alive(meta: dict[str, Any]) -> bool:
    """Is the process that is writing this session still running (this host, an effmon process)?"""
    import os
    import socket

    import psutil

    pid = meta.get("recorder_pid")
    if not pid or meta.get("host", {}).get("hostname") != socket.gethostname():
        return False
    if pid == os.getpid():
        return True  # recording in this very process (the API, the dashboard's background recorder)
    try:
        return "effmon" in " ".join(psutil.Process(pid).cmdline())  # the pid may since belong to another program
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def entry(path: Path) -> SessionEntry:
    try:
        with SessionReader(path) as reader:
            meta = reader.meta()
            start, end = reader.time_range()
            if meta.get("ended_at") and meta.get("status") != "recording":
                start = meta.get("started_at", start)
                end = meta["ended_at"]
            return SessionEntry(path, meta.get("name", path.stem), meta, start, end, reader.size_bytes())
    except StoreError as exc:
        return SessionEntry(path, path.name.removesuffix(SUFFIX), {}, None, None, path.stat().st_size, str(exc))


def list_sessions(directory: Path | None = None) -> list[SessionEntry]:
    directory = directory or sessions_dir()
    if not directory.is_dir():
        return []
    entries = [entry(p) for p in directory.glob(f"*{SUFFIX}")]
    return sorted(entries, key=lambda e: (e.meta.get("wall_started_at") or 0, e.name))


def _last_back(name: str) -> int | None:
    """``last`` (or ``latest``) is 0, ``last~2`` the third newest; anything else None."""
    head, _, back = name.partition("~")
    if head not in ("last", "latest"):
        return None
    if not back:
        return 0
    if not back.isdigit():
        raise SessionNotFound(f"{name!r}: use last, last~1, last~2 ... (sessions back from the newest)")
    return int(back)


def resolve(name: str, directory: Path | None = None) -> Path:
    """A session by path, by name, by unique name prefix, ``last`` for the newest, ``last~N`` for the one N before."""
    as_path = Path(name).expanduser()
    if as_path.is_file():
        return as_path
    directory = directory or sessions_dir()
    back = _last_back(name)
    if back is not None:
        entries = list_sessions(directory)
        if not entries:
            raise SessionNotFound(f"no sessions yet in {directory}; record one with: effmon demo")
        if back >= len(entries):
            raise SessionNotFound(
                f"{name}: there are only {len(entries)} sessions (last~{len(entries) - 1} is the oldest)"
            )
        return entries[-1 - back].path
    exact = directory / f"{name}{SUFFIX}"
    if exact.is_file():
        return exact
    matches = sorted(directory.glob(f"{name}*{SUFFIX}")) if directory.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(m.name.removesuffix(SUFFIX) for m in matches[:5])
        raise SessionNotFound(f"{name!r} matches {len(matches)} sessions ({names}...); give more of the name")
    raise SessionNotFound(f"no session named {name!r} in {directory}; list them with: effmon sessions")
