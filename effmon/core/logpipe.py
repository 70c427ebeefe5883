"""A launched command's output kept beside its session: read through a pipe, redacted line by line, written
to a 0600 file. The command never writes to the file itself, so no secret it prints is stored."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from effmon.core.files import create_private
from effmon.core.redact import redact_text

CHUNK = 65536
_LINES = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)")


class RedactedLog:
    """``stdout=log.fd`` for the child (then ``log.started()``), ``log.close()`` once it has ended."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.echo = echo
        """Told each complete line as written (redacted); a line a terminal redraws (ending in a bare carriage
        return: a progress bar's) goes to the file only."""
        try:
            fd = create_private(self.path)
        except FileExistsError:  # left by an earlier session of the same name (its file is gone): replaced
            self.path.unlink()
            fd = create_private(self.path)
        self._out = os.fdopen(fd, "wb")
        self._read, self.fd = os.pipe()
        self._thread = threading.Thread(target=self._pump, name="effmon-log", daemon=True)
        self._thread.start()

    def started(self) -> None:
        """The child has its copy of the pipe: close ours, so the pump ends when the child's output does. Once:
        the number may belong to another file by the next call (closing it again once closed the session
        database's descriptor under SQLite, and a live reader then failed with "disk I/O error")."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _pump(self) -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(self._read, CHUNK)
                if not chunk:
                    break
                pending += chunk
                whole = b"".join(_LINES.findall(pending))
                if not whole and len(pending) >= CHUNK:  # a very long line: redacted as it is, not held forever
                    whole = pending
                if whole:
                    self._write(whole)
                    pending = pending[len(whole) :]
            if pending:
                self._write(pending)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(self._read)
            with contextlib.suppress(OSError):
                self._out.close()

    def _write(self, data: bytes) -> None:
        lines = _LINES.findall(data) or [data]
        if sum(map(len, lines)) < len(data):
            lines.append(data[sum(map(len, lines)) :])
        texts = [redact_text(line.decode("utf-8", "replace")) for line in lines]
        self._out.write("".join(texts).encode("utf-8"))
        self._out.flush()
        if self.echo is not None:
            for text in texts:
                if text.endswith("\n"):
                    with contextlib.suppress(Exception):  # the terminal's trouble never stops the log
                        self.echo(text.rstrip("\r\n"))

    def close(self, timeout: float = 5.0) -> None:
        """Wait (a little) for the last output; processes the child left behind may hold the pipe open."""
        self.started()
        self._thread.join(timeout)
