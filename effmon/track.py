"""Report training steps from inside a process: two lines, stdlib only, never blocking.

    import effmon.track as et
    for batch in loader:
        with et.step(tokens=batch["input_ids"].numel(), samples=len(batch["input_ids"])):
            loss = train_step(batch)
        et.log(loss=loss.item())            # optional: attaches to the step just ended

Each event goes into a bounded in-memory buffer (a full buffer drops the event and counts the drop,
it never waits) that a daemon thread appends to a small JSON-lines file, so a monitor started or
attached later (``effmon run``, ``effmon attach PID``) still gets the whole history. Nothing is sent
anywhere; with no monitor the cost is a few microseconds a step. ``EFFMON_TRACK=0`` turns it off.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BUFFER = 10_000
FLUSH_EVERY_S = 0.5


def track_dir() -> str:
    """Where instrumented processes write: ``$EFFMON_TRACK_DIR`` (set by ``effmon run``), else a per-user dir."""
    env = os.environ.get("EFFMON_TRACK_DIR")
    if env:
        return env
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(base, f"effmon-{os.getuid()}", "track")


def track_path(pid: int, directory: str | None = None) -> str:
    return os.path.join(directory or track_dir(), f"{pid}.jsonl")


class _Tracker:
    def __init__(self) -> None:
        self.enabled = os.environ.get("EFFMON_TRACK", "1") != "0"
        self.buffer: collections.deque[dict[str, Any]] = collections.deque()
        self.dropped = 0
        self.step_no = 0
        self.pid = os.getpid()
        self.rank = int(os.environ.get("RANK", "0") or 0)
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if self.enabled:
            self.emit(
                {
                    "kind": "start",
                    "t": time.time(),
                    "pid": self.pid,
                    "rank": self.rank,
                    "local_rank": self.local_rank,
                    "world_size": int(os.environ.get("WORLD_SIZE", "1") or 1),
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                }
            )

    def emit(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if len(self.buffer) >= BUFFER:
            self.dropped += 1  # never wait on the writer
            return
        self.buffer.append(event)
        if self._thread is None:
            self._start()
        elif len(self.buffer) > BUFFER // 2:
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="effmon-track", daemon=True)
            self._thread.start()
            atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_EVERY_S)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        lines = []
        while self.buffer:
            lines.append(json.dumps(self.buffer.popleft(), default=str))
        if self.dropped:
            lines.append(json.dumps({"kind": "dropped", "t": time.time(), "count": self.dropped}))
        try:
            path = track_path(self.pid)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        except OSError:
            self.dropped += len(lines)  # a full or read-only disk loses events, never the training run


_tracker: _Tracker | None = None


def _get() -> _Tracker:
    global _tracker
    if _tracker is None or _tracker.pid != os.getpid():  # a forked worker gets its own file
        _tracker = _Tracker()
    return _tracker


@contextmanager
def step(tokens: int | None = None, samples: int | None = None, **extra: Any) -> Iterator[None]:
    """Time one training step; ``extra`` (loss, comm_s, phase, ...) is stored with it."""
    t0 = time.time()
    try:
        yield
    finally:
        record_step(t0, time.time(), tokens=tokens, samples=samples, **extra)


def record_step(
    t_start: float,
    t_end: float,
    *,
    tokens: int | None = None,
    samples: int | None = None,
    step: int | None = None,
    **extra: Any,
) -> None:
    """Report a step timed elsewhere (the transformers integration uses this)."""
    tr = _get()
    tr.step_no = step if step is not None else tr.step_no + 1
    event = {
        "kind": "train_step",
        "t_start": t_start,
        "t_end": t_end,
        "step": tr.step_no,
        "tokens": tokens,
        "samples": samples,
        "rank": tr.rank,
        **extra,
    }
    tr.emit(event)


def log(**values: Any) -> None:
    """Values (loss, lr, grad_norm, epoch, ...) that belong to the step just ended."""
    tr = _get()
    tr.emit({"kind": "log", "t": time.time(), "step": tr.step_no, "rank": tr.rank, **values})


def model_info(**info: Any) -> None:
    """Parameter counts, PEFT method and friends, once at start: the monitor stores them in the session."""
    _get().emit({"kind": "model", "t": time.time(), **info})


def phase(name: str) -> None:
    """Mark the start of a named phase (warm-up, eval ...); ``effmon report --phase`` uses it."""
    _get().emit({"kind": "phase", "t": time.time(), "name": name})


def flush() -> None:
    _get().flush()


def dropped() -> int:
    return _get().dropped
