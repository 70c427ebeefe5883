"""Private files and safe writes (see docs/security.md).

* ``private_dir``: a directory effmon owns, 0700 whatever the umask.
* ``create_private``: a new file, 0600, never through a symlink, never over an existing file.
* ``checked_dir``: a directory shared by path convention (the track channel's) used only when it is a real
  directory owned by the expected user with no group or other access; anything else is refused.
* ``safe_write``: ``-o PATH`` writes: atomic over a regular file (keeping its mode) or a new path (0600);
  devices, directories and symlinks are refused unless the user says ``--force``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafePath(Exception):
    """A path effmon will not write to (or read from) as it is; the message says why and what to do."""


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make it 0700; an existing one of ours is tightened to 0700."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def create_private(path: str | Path) -> int:
    """A new file at ``path``, 0600, as an open write descriptor. Raises FileExistsError when anything (a file,
    a symlink, even a dangling one) is there already."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # umask-proof
    return fd


def open_private(path: Path, mode: str = "ab") -> object:
    """A new private file opened for writing (``create_private`` as a file object)."""
    return os.fdopen(create_private(path), mode)


def dir_problem(path: str, uid: int) -> str | None:
    """Why ``path`` is not a safe private directory of ``uid`` (None when it is): not a symlink, a directory,
    owned by ``uid``, no access for group or others."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "it does not exist"
    if stat.S_ISLNK(st.st_mode):
        return f"it is a symbolic link (to {os.readlink(path)})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != uid:
        return f"it is owned by uid {st.st_uid}, not {uid}"
    if st.st_mode & 0o077:
        return f"its mode is {stat.S_IMODE(st.st_mode):04o}: other users can reach into it (it must be 0700)"
    return None


def _chain(path: str, base: str | None) -> list[str]:
    """The directories from just below ``base`` (default: ``path``'s parent) down to ``path``."""
    base = os.path.dirname(path) if base is None else base
    parts = os.path.relpath(path, base).split(os.sep)
    if parts[0] in ("..", "."):
        raise ValueError(f"{path} is not under {base}")
    return [os.path.join(base, *parts[: i + 1]) for i in range(len(parts))]


def chain_problem(path: str, base: str | None, uid: int) -> str | None:
    """Why a directory below ``base`` down to ``path`` is not a private directory of ``uid`` (None if all are)."""
    for current in _chain(path, base):
        problem = dir_problem(current, uid)
        if problem:
            return f"{current}: {problem}"
    return None


def checked_dir(path: str, base: str | None = None, create: bool = True) -> str:
    """``path`` as a private directory of this user, created 0700 when missing (``create``). Every directory
    from below ``base`` (trusted, e.g. ``/tmp`` or ``$XDG_RUNTIME_DIR``; default: ``path``'s parent) down to
    ``path`` is checked, so nobody else can swap a part of it. Raises UnsafePath when one exists as something
    else (another user's, open to others, a symlink)."""
    for current in _chain(path, base):
        if create and not os.path.lexists(current):
            with contextlib.suppress(FileExistsError):  # made meanwhile: checked below like any other
                os.mkdir(current, DIR_MODE)
                os.chmod(current, DIR_MODE)
        problem = dir_problem(current, os.geteuid())
        if problem:
            raise UnsafePath(
                f"refusing to use {current}: {problem}. It may have been made by another user to catch effmon's "
                f"files; remove it (rm -r {current}) or point EFFMON_TRACK_DIR at a directory only you can open"
            )
    return path


def open_owned(path: str, uid: int) -> int:
    """``path`` opened for reading only when it is a regular file owned by ``uid`` (never through a symlink,
    never blocking on a planted pipe); raises UnsafePath otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePath(f"refusing to read {path}: it is a symbolic link") from None
        raise exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"owned by uid {st.st_uid}, not {uid}"
        raise UnsafePath(f"refusing to read {path}: it is {what}")
    return fd


def check_target(path: str | Path, force: bool = False) -> tuple[Path, os.stat_result | None, bool]:
    """Where a ``-o PATH`` write goes: (path, its stat or None when new, whether it is written as a stream).
    Raises UnsafePath for what ``safe_write`` refuses, so a command can say so before doing its work."""
    out = Path(path).expanduser()
    st = _lstat(out)
    if st is not None and stat.S_ISLNK(st.st_mode):
        if not force:
            raise UnsafePath(
                f"{out} is a symbolic link (to {os.readlink(out)}); effmon does not write through links. "
                "Give the real path, or add --force to write to the link's target"
            )
        out = Path(os.path.realpath(out))
        st = _lstat(out)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{out} is a directory; give a file name in it, e.g. -o {out / 'report.txt'}")
    if st is not None and not stat.S_ISREG(st.st_mode):
        if not force:
            raise UnsafePath(
                f"{out} is not a regular file (a device, pipe or socket); effmon writes reports to files. "
                "Leave out -o to print to the terminal, or add --force to write into it"
            )
        return out, st, True
    if not out.parent.is_dir():
        raise UnsafePath(f"cannot write {out}: directory {out.parent} does not exist; create it first")
    return out, st, False


def safe_write(path: str | Path, data: str | bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` for a ``-o`` option and return where it went.

    A regular file is replaced atomically (a temporary file beside it, renamed over it) and keeps its mode; a
    new path is created 0600. A symlink, a device, a pipe or a socket is refused unless ``force``: then a
    symlink's target is written (atomically, as above) and a device or pipe is written into as a stream. A
    directory is always refused."""
    out, st, stream = check_target(path, force)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if stream:
            with open(out, "wb") as f:  # a device or pipe, with --force: no temporary file, no rename
                f.write(raw)
            return out
        return _replace(out, st, raw)
    except OSError as exc:
        raise UnsafePath(f"cannot write {out}: {exc.strerror or exc}") from None


def _replace(out: Path, st: os.stat_result | None, raw: bytes) -> Path:
    mode = stat.S_IMODE(st.st_mode) if st is not None else FILE_MODE
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")  # 0600, O_EXCL
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if st is not None and os.geteuid() == 0:
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
