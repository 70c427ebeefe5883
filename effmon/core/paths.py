"""Where sessions live: ``$EFFMON_HOME``, else ``$XDG_DATA_HOME/effmon``, else ``~/.local/share/effmon``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from effmon.core.files import private_dir


class HomeError(Exception):
    pass


def effmon_home() -> Path:
    env = os.environ.get("EFFMON_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "effmon"


def sessions_dir(create: bool = False) -> Path:
    """The sessions folder; ``create`` makes it (and a new effmon home) 0700 and checks it is writable."""
    home = effmon_home()
    path = home / "sessions"
    if create:
        try:
            if not home.exists():
                private_dir(home)
            private_dir(path)
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)  # its own name: starts may run at once
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise HomeError(
                f"cannot write sessions to {path} ({exc.strerror or exc}); "
                "set EFFMON_HOME to a writable directory, e.g. EFFMON_HOME=/tmp/effmon"
            ) from None
    return path
