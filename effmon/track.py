"""Report training steps from inside a process: two lines, stdlib only, never blocking.

    import effmon.track as et
    for batch in loader:
        with et.step(tokens=batch["input_ids"].numel(), samples=len(batch["input_ids"])):
            loss = train_step(batch)
        et.log(loss=loss.item())            # optional: attaches to the step just ended

``et.plan(total_steps=300)`` once (or ``step(total=300)``) lets the monitor show step N / total and time left.

Each event goes into a bounded in-memory buffer (a full buffer drops the event and counts the drop,
it never waits) that a daemon thread appends to a small JSON-lines file, so a monitor started or
attached later (``effmon run``, ``effmon attach PID``) still gets the whole history. Nothing is sent
anywhere; with no monitor the cost is a few microseconds a step. ``EFFMON_TRACK=0`` turns it off.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from effmon.core.files import UnsafePath, checked_dir, create_private

BUFFER = 10_000
FLUSH_EVERY_S = 0.5


STALE_S = 3600.0
"""A track file of a process that has ended is removed after this long (when another one starts)."""


def track_location(environ: Mapping[str, str] | None = None, uid: int | None = None) -> tuple[str, str]:
    """(trusted base, directory) where a process writes: ``$EFFMON_TRACK_DIR`` (set by ``effmon run``), else a
    directory of its user, ``$XDG_RUNTIME_DIR/effmon-track`` or ``$TMPDIR/effmon-<uid>/track`` (every part below
    the base made 0700 and checked). ``environ`` and ``uid`` are another process's, for the monitor."""
    env = os.environ if environ is None else environ
    if env.get("EFFMON_TRACK_DIR"):
        chosen = os.path.abspath(env["EFFMON_TRACK_DIR"])
        return os.path.dirname(chosen), chosen
    if env.get("XDG_RUNTIME_DIR"):
        return env["XDG_RUNTIME_DIR"], os.path.join(env["XDG_RUNTIME_DIR"], "effmon-track")
    base = env.get("TMPDIR") or "/tmp"
    return base, os.path.join(base, f"effmon-{os.geteuid() if uid is None else uid}", "track")


def track_dir(environ: Mapping[str, str] | None = None, uid: int | None = None) -> str:
    return track_location(environ, uid)[1]


def track_path(pid: int, directory: str | None = None) -> str:
    return os.path.join(directory or track_dir(), f"{pid}.jsonl")


def remove_stale(directory: str, now: float | None = None) -> int:
    """Remove the track files of processes that ended more than ``STALE_S`` ago; returns how many went."""
    now = time.time() if now is None else now
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        stem, dot, ext = name.partition(".")
        if not (stem.isdigit() and dot and ext == "jsonl") or int(stem) == os.getpid():
            continue
        path = os.path.join(directory, name)
        try:
            if now - os.lstat(path).st_mtime < STALE_S or _alive(int(stem)):
                continue
            os.unlink(path)
            removed += 1
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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
        self._fd: int | None = None
        self._flush_lock = threading.Lock()
        self.refused: str | None = None
        self.planned: tuple[Any, Any] = (None, None)
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
                    # a torchrun job: the run id all its nodes share, and which node this is
                    "run_id": os.environ.get("TORCHELASTIC_RUN_ID"),
                    "node_rank": int(os.environ.get("GROUP_RANK", "0") or 0),
                    "host": socket.gethostname(),
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
        """Write what is buffered. The writer thread and an explicit ``flush()`` (or the one at exit) take turns:
        one file, opened once, lines in order. ``emit`` never waits for this."""
        if not self.buffer:
            return
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        lines = []
        while self.buffer:
            lines.append(json.dumps(self.buffer.popleft(), default=str))
        if self.dropped:
            lines.append(json.dumps({"kind": "dropped", "t": time.time(), "count": self.dropped}))
        data = ("\n".join(lines) + "\n").encode("utf-8")
        try:
            fd = self._fd if self._fd is not None else self._open()
            while data:
                data = data[os.write(fd, data) :]
        except UnsafePath as exc:
            self._refuse(str(exc))
        except OSError:
            self.dropped += len(lines)  # a full or read-only disk loses events, never the training run

    def _open(self) -> int:
        """This process's file, new and 0600, in a directory verified to be this user's alone (never through a
        symlink; a file left there by an earlier process with the same pid is replaced, not appended to)."""
        base, directory = track_location()
        checked_dir(directory, base)
        remove_stale(directory)
        path = track_path(self.pid, directory)
        try:
            fd = create_private(path)
        except FileExistsError:
            os.unlink(path)  # in our own 0700 directory: an old file of a reused pid, or a link, never followed
            fd = create_private(path)
        self._fd = fd
        return fd

    def _refuse(self, why: str) -> None:
        """The directory is not safe: stop tracking (one line on stderr), never write there."""
        self.enabled = False
        self.buffer.clear()
        self.refused = why
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"effmon.track: {why}; this process's steps are not recorded\n")


_tracker: _Tracker | None = None


def _get() -> _Tracker:
    global _tracker
    if _tracker is None or _tracker.pid != os.getpid():  # a forked worker gets its own file
        _tracker = _Tracker()
    return _tracker


@contextmanager
def step(
    tokens: int | None = None, samples: int | None = None, total: int | None = None, **extra: Any
) -> Iterator[None]:
    """Time one training step; ``extra`` (loss, comm_s, phase, ...) is stored with it. ``total``: the steps the
    run will take (as ``plan(total_steps=...)``), for step N / total and time left."""
    t0 = time.time()
    try:
        yield
    finally:
        if total is not None:
            plan(total_steps=total)
        record_step(t0, time.time(), tokens=tokens, samples=samples, **extra)


def plan(total_steps: int | None = None, epochs: float | None = None) -> None:
    """How long the run will be: its optimizer steps and/or epochs (the transformers integration reports the
    Trainer's ``max_steps`` and ``num_train_epochs``). Sent again only when it changes."""
    tr = _get()
    planned = (total_steps, epochs)
    if planned != tr.planned:
        tr.planned = planned
        tr.emit({"kind": "plan", "t": time.time(), "total_steps": total_steps, "epochs": epochs, "rank": tr.rank})


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
    if "comm_s" not in extra:
        extra.update(communication())
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


def span(name: str, t_start: float, t_end: float) -> None:
    """A stretch of work between steps (evaluation, checkpoint saving, logging), timed elsewhere: it is recorded
    as a phase of its own and kept out of the steps' latency and throughput. Rank 0 reports them."""
    tr = _get()
    if tr.rank == 0:
        tr.emit({"kind": "span", "name": name, "t_start": t_start, "t_end": t_end, "step": tr.step_no})


class _Comm:
    """Gradient synchronisation of one DDP model, per step: a comm hook that does what DDP's default one does
    (average each bucket over the ranks) and notes when each bucket was launched and when it completed.

    *Exposed* communication is the time from the last bucket's launch (this rank's backward computation is
    done then) to the end of the backward pass (a callback queued on the autograd engine, run after DDP has
    waited for every all-reduce and written the averaged gradients back): what the step waits for beyond its
    computation (waiting for a slower rank included). *Busy* time is the union of the buckets' all-reduce
    intervals, most of it overlapped with the backward pass. Both are host wall times: exact for gloo on the
    CPU; with NCCL the completion callbacks follow the CUDA stream (pending a GPU check)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.intervals: list[tuple[float, float]] = []
        self.last_launch = 0.0
        self.completed = 0.0
        self.backward_end: float | None = None
        """When the backward pass that launched the buckets returned control (after DDP waited for every
        all-reduce and copied the averaged gradients back): the end of what the step waits for."""

    def take(self) -> tuple[float, float]:
        """(exposed, busy) seconds since the previous call."""
        with self.lock:
            intervals, self.intervals = self.intervals, []
            last_launch, backward_end, self.backward_end = self.last_launch, self.backward_end, None
        if not intervals:
            return 0.0, 0.0
        busy, end = 0.0, None
        for a, b in sorted(intervals):
            if end is None or a > end:
                busy += b - a
                end = b
            elif b > end:
                busy += b - end
                end = b
        end_of_sync = max(b for _, b in intervals)
        if backward_end is not None and backward_end > end_of_sync:
            end_of_sync = backward_end
        return max(0.0, end_of_sync - last_launch), busy


_comm: _Comm | None = None


def communication() -> dict[str, float]:
    """The gradient synchronisation since the previous call (``comm_s`` exposed, ``comm_busy_s`` busy), when
    ``ddp()`` watches a model; empty otherwise."""
    if _comm is None:
        return {}
    exposed, busy = _comm.take()
    return {"comm_s": exposed, "comm_busy_s": busy}


def ddp(model: Any) -> Any:
    """Measure the gradient synchronisation of a ``DistributedDataParallel`` model: every step then carries its
    exposed communication time (``comm_s``) and all-reduce busy time (``comm_busy_s``). Call it once, after
    wrapping the model and before the first backward pass; returns the model. (The transformers integration
    does this for a Trainer.) Replaces DDP's default comm hook with one that does the same averaging."""
    global _comm
    dist = sys.modules.get("torch.distributed")  # the caller's own, already imported: effmon.track imports no torch
    if dist is None or _comm is not None or not dist.is_initialized():
        return model
    comm = _Comm()
    world = dist.get_world_size()

    engine = getattr(getattr(sys.modules.get("torch.autograd"), "Variable", None), "_execution_engine", None)

    def backward_done() -> None:
        with comm.lock:
            comm.backward_end = time.perf_counter()

    def timed_allreduce(state: Any, bucket: Any) -> Any:
        t0 = time.perf_counter()
        with comm.lock:
            comm.last_launch = t0
        if engine is not None and bucket.is_last():
            engine.queue_callback(backward_done)  # runs when this backward pass ends, after DDP's own finalising
        tensor = bucket.buffer().div_(world)
        fut = dist.all_reduce(tensor, async_op=True).get_future()

        def done(f: Any) -> Any:
            with comm.lock:
                comm.intervals.append((t0, time.perf_counter()))
            return f.value()[0]

        return fut.then(done)

    timed_allreduce.__annotations__ = {}  # DDP checks annotations; string ones (postponed) fail its check
    model.register_comm_hook(None, timed_allreduce)
    _comm = comm
    return model


def flush() -> None:
    _get().flush()


def dropped() -> int:
    return _get().dropped
