"""Progress of a headless recording on stderr, a view of the recording (``RecordOptions.views``): on a terminal a
Rich progress bar under the job's output (``TerminalProgress``); otherwise (a pipe, a log file, a detached run)
``effmon: step 120/300 (40%) · epoch 1.20/3 · 3m10s elapsed · 4m40s left``, one line every ``EVERY_S`` seconds
once steps come."""

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
            except Exception:  # noqa: BLE001 - a progress line is never worth a traceback; the next read retries
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


class TerminalProgress:
    """For a headless recording on a terminal: a Rich progress bar on the last line (step N / total, epoch, time
    left), the job's own output printed above it. The output comes through effmon (``RecordOptions.echo``: kept
    in NAME.log, redacted), so the two never write over each other."""

    def __init__(self, every_s: float = 1.0) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.every_s = every_s

    def echo(self, line: str) -> None:
        from rich.text import Text

        self.console.print(Text.from_ansi(line), soft_wrap=True)

    def view(self, path: Path, note: Callable[[str, str], None], live: Any) -> Callable[[], None]:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        bar = Progress(
            TextColumn("[bold]effmon[/bold] {task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=True,
        )
        done = threading.Event()

        def loop() -> None:
            from effmon.core.store import SessionReader, StoreError
            from effmon.metrics.progress import session_progress

            task = None
            try:
                reader = SessionReader(path)
            except StoreError:
                return
            with reader, bar:
                while not done.wait(self.every_s):
                    try:
                        now = session_progress(reader)
                    except Exception:  # noqa: BLE001 - the bar is never worth a traceback; the next read retries
                        continue
                    if now is None:
                        continue
                    if task is None:
                        task = bar.add_task(now.unit, total=now.total, info="")
                    rest = now.left_text() or now.line().split(" · ")[-1]  # time left, else the rate
                    info = " · ".join(p for p in (now.epoch_text(), rest) if p)
                    count = f"{now.unit} {now.done:,}" + (f"/{now.total:,}" if now.total else "")
                    bar.update(task, description=count, completed=now.done, total=now.total, info=info)

        thread = threading.Thread(target=loop, name="effmon-progress-bar", daemon=True)
        thread.start()

        def stop() -> None:
            done.set()
            thread.join(2.0)

        return stop
