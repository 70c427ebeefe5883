"""Progress of a headless recording on stderr: ``effmon: step 120/300 (40%) · epoch 1.20/3 · 3m10s elapsed ·
4m40s left``, one line every ``EVERY_S`` seconds once steps come (plain lines: they sit between the job's own
output on a terminal and read well in a log file). A view of the recording (``RecordOptions.views``)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

EVERY_S = 10.0
"""Seconds between lines; ``EFFMON_PROGRESS_EVERY_S`` changes it."""


View = Callable[[Path, Callable[[str, str], None], Any], Callable[[], None]]


def progress_view(every_s: float | None = None) -> View:
    """A view that prints the training progress of the session it is given, every ``every_s`` seconds while it
    changes."""
    if every_s is None:
        try:
            every_s = float(os.environ.get("EFFMON_PROGRESS_EVERY_S") or EVERY_S)
        except ValueError:
            every_s = EVERY_S
    interval = max(0.2, every_s)

    def start(path: Path, note: Callable[[str, str], None], live: Any) -> Callable[[], None]:
        done = threading.Event()
        thread = threading.Thread(target=_loop, args=(path, done, interval), name="effmon-progress", daemon=True)
        thread.start()

        def stop() -> None:
            done.set()
            thread.join(2.0)

        return stop

    return start


def _loop(path: Path, done: threading.Event, every_s: float) -> None:
    from effmon.core.store import SessionReader, StoreError
    from effmon.metrics.progress import session_progress

    last = None
    try:
        reader = SessionReader(path)
    except StoreError:
        return
    try:
        while not done.wait(every_s):
            try:
                now = session_progress(reader)
            except StoreError:
                continue
            if now is not None and (last is None or now.done != last.done):
                _say(f"effmon: {now.line()}")
                last = now
    finally:
        reader.close()


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
