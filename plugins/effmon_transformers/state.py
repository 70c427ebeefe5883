"""Late attach to a Trainer job effmon did not start: its own logs are the step history.

Two logs a Trainer job leaves are read, whichever it writes:

- ``trainer_state.json``, written into each ``checkpoint-N`` folder of its ``output_dir`` at every save: its
  ``log_history`` holds, per logged step, the loss, learning rate, gradient norm, epoch and (when the job counts
  them) the input tokens seen; read with the standard JSON reader;
- TensorBoard event files (``report_to="tensorboard"``: ``output_dir/runs/<date>_<host>/events.out.tfevents.*``,
  or ``$TENSORBOARD_LOGGING_DIR``), flushed at every logged step, so they are current between checkpoints; read
  with TensorBoard's own ``EventAccumulator`` (the ``tensorboard`` extra), incrementally.

This source finds the folders from the watched process's own arguments (``--output_dir``, ``--logging_dir``), its
environment and its working directory, reads every few seconds, and stores each logged step once
(``train_log``), from whichever log has it first. It does nothing under ``effmon run`` (the callback there
reports every step as it ends) or where a job reports through ``effmon.track``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from effmon.plugins import Entity, M, Row, SourceInfo, SourceOptions

TRAIN_LOG = Entity(
    "train_log",
    keys=(),
    description="Logged steps of a Trainer job effmon did not start, read from its trainer_state.json "
    "(no step times: the file holds none)",
    metrics=(
        M("step", "", "count", "Global step number", "INTEGER"),
        M("loss", "", "gauge", "Training loss"),
        M("lr", "", "gauge", "Learning rate"),
        M("grad_norm", "", "gauge", "Gradient norm"),
        M("epoch", "", "gauge", "Epoch (fractional)"),
        M("tokens_seen", "tokens", "count", "Input tokens seen so far (when the job counts them)", "INTEGER"),
    ),
)

PATTERNS = tuple(
    prefix + name for prefix in ("", "*/", "*/*/") for name in ("trainer_state.json", "checkpoint-*/trainer_state.json")
)
"""Where a Trainer's state file is looked for below a job folder (two levels at most: a home folder stays cheap)."""

EVENT_PATTERNS = tuple(prefix + "events.out.tfevents.*" for prefix in ("", "*/", "runs/*/", "*/runs/*/", "*/*/runs/*/"))
"""Where TensorBoard event files are looked for below a job folder: a logging folder itself, a run in it, or the
Trainer's ``output_dir/runs/<run>/`` up to two levels below (a home folder stays cheap to search)."""

TB_TAGS = {
    "loss": "train/loss",
    "lr": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "epoch": "train/epoch",
    "tokens_seen": "train/num_input_tokens_seen",
}
"""The scalars the Trainer's TensorBoardCallback writes (its ``rewrite_logs`` puts ``train/`` before each log key)."""

STATE_KEYS = {
    "loss": "loss",
    "lr": "learning_rate",
    "grad_norm": "grad_norm",
    "epoch": "epoch",
    "tokens_seen": "num_input_tokens_seen",
}
"""TRAIN_LOG's metrics, by the key of a ``log_history`` entry of trainer_state.json."""

READ_EVERY_S = 0.5
SEARCH_EVERY = 4
"""Every read takes what the logs found so far added; every SEARCH_EVERY-th read also searches the job's folders
for a newer log (a new run folder, a new checkpoint)."""
"""How often the reader thread looks at the job's logs (the Trainer flushes its TensorBoard events at each log)."""

OUTPUT_FLAGS = ("--output_dir", "--output-dir", "--logging_dir", "--logging-dir")


def named_folders(cmdline: list[str], cwd: str | None, environ: dict[str, str] | None = None) -> list[Path]:
    """The folders a Trainer job's own command line and environment name as where it writes: ``--output_dir``,
    ``--logging_dir``, ``TENSORBOARD_LOGGING_DIR``, and any argument that is a folder (a script's positional
    output folder)."""
    found: list[Path] = []
    if environ and environ.get("TENSORBOARD_LOGGING_DIR"):
        found.append(Path(environ["TENSORBOARD_LOGGING_DIR"]).expanduser())
    found += _flagged(cmdline)
    base = Path(cwd) if cwd else None
    out = [p if p.is_absolute() or base is None else base / p for p in found]
    for path in _folder_arguments(cmdline, base):
        if path not in out:
            out.append(path)
    return out


def _flagged(cmdline: list[str]) -> list[Path]:
    found = []
    for i, arg in enumerate(cmdline):
        for flag in OUTPUT_FLAGS:
            if arg == flag and i + 1 < len(cmdline):
                found.append(Path(cmdline[i + 1]))
            elif arg.startswith(flag + "="):
                found.append(Path(arg.split("=", 1)[1]))
    return found


def _folder_arguments(cmdline: list[str], base: Path | None) -> list[Path]:
    """Arguments that name a folder, or one the job may yet create in an existing folder (not a file, not the
    working directory itself)."""
    out = []
    for arg in cmdline[1:]:
        if arg.startswith("-") or ("/" not in arg and not arg.startswith(".")):
            continue
        path = Path(arg) if Path(arg).is_absolute() or base is None else base / arg
        if path != base and (path.is_dir() or (not path.exists() and path.parent.is_dir())):
            out.append(path)
    return out


def job_folders(cmdline: list[str], cwd: str | None, environ: dict[str, str] | None = None) -> list[Path]:
    """Where a Trainer job writes: the folders its command line names, then its working directory."""
    out = named_folders(cmdline, cwd, environ)
    if cwd:
        out.append(Path(cwd))
    return out


class Job:
    """Which log files are the watched job's own: a file it holds open (TensorBoard keeps its event file open),
    or one written since it started inside a folder its command line names (a checkpoint's trainer_state.json).
    An earlier run's files in the same folders (a reused ``--output_dir``) are never taken."""

    def __init__(self, pids: list[int], named: list[Path], started: float | None):
        self.pids, self.named, self.started = pids, named, started

    def open_files(self) -> set[str]:
        import psutil

        held: set[str] = set()
        for pid in self.pids:
            try:
                proc = psutil.Process(pid)
                for p in [proc, *proc.children(recursive=True)]:
                    held.update(os.path.realpath(f.path) for f in p.open_files())
            except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                continue
        return held

    def owns(self, path: Path, held: set[str]) -> bool:
        if os.path.realpath(path) in held:
            return True
        if self.started is None:
            return False
        try:
            written = path.stat().st_mtime
        except OSError:
            return False
        real = os.path.realpath(path)
        inside = any(real.startswith(os.path.realpath(folder) + os.sep) for folder in self.named)
        return inside and written >= self.started


def _candidates(folders: list[Path], patterns: tuple[str, ...]) -> list[Path]:
    found: dict[Path, None] = {}
    for folder in folders:
        for pattern in patterns:
            found.update((p, None) for p in folder.glob(pattern) if p.is_file())
    return list(found)


def _newest(
    folders: list[Path], patterns: tuple[str, ...], job: Job | None = None, held: set[str] | None = None
) -> Path | None:
    candidates = _candidates(folders, patterns)
    if job is not None:
        candidates = [p for p in candidates if job.owns(p, held or set())]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime)


def newest_state(folders: list[Path], job: Job | None = None, held: set[str] | None = None) -> Path | None:
    """The newest ``trainer_state.json`` in these folders, their ``checkpoint-*`` folders, or one level below
    (with ``job``: of those that are the job's own)."""
    return _newest(folders, PATTERNS, job, held)


def newest_events(folders: list[Path], job: Job | None = None, held: set[str] | None = None) -> Path | None:
    """The folder of the newest TensorBoard event file below these folders (a run's folder)."""
    newest = _newest(folders, EVENT_PATTERNS, job, held)
    return newest.parent if newest else None


def foreign(folders: list[Path], job: Job, held: set[str]) -> list[Path]:
    """Trainer logs in the job's folders that are not its own (an earlier run's)."""
    return [p for p in _candidates(folders, PATTERNS + EVENT_PATTERNS) if not job.owns(p, held)]


def log_row(step: int, values: dict[str, Any]) -> Row:
    """One logged step (``values`` keyed as TRAIN_LOG's metrics; missing ones are N/A); stamped when handed out."""
    tokens = values.get("tokens_seen")
    return Row(
        "train_log",
        {"step": step, "tokens_seen": int(tokens) if tokens is not None else None}
        | {k: values.get(k) for k in ("loss", "lr", "grad_norm", "epoch")},
    )


class TrainerStateSource:
    name = "trainer_state"

    def __init__(self, options: SourceOptions):
        self.options = options
        self.channels = {"state": 0.5}  # a logged step is on screen within about a second
        self.folders: list[Path] | None = None
        self.job: Job | None = None
        self.waiting_said = False
        self.ticks = 0
        self.search = True
        self.found_run: Path | None = None
        self.found_state: Path | None = None
        self.steps: set[int] = set()
        self.read_from: tuple[str, float] | None = None
        self.announced: set[str] = set()
        self.runs: dict[Path, Any] = {}
        """A TensorBoard EventAccumulator per run folder: each reload reads only what was appended."""
        self.lock = threading.Lock()
        self.pending: list[Row] = []
        self.worker: threading.Thread | None = None
        self.stopping = threading.Event()
        self.last: tuple[float, float] | None = None
        """The session time and the monotonic clock of the last read (the final read stamps its rows from them)."""

    def open(self) -> SourceInfo:
        return SourceInfo()

    def _folders(self) -> list[Path]:
        if self.folders is None:
            self.folders, self.job = find_job(self.options.watched_pids())
        return self.folders

    def read(self, channel: str, now: float) -> list[Row]:
        """What the reader thread found since the last read, stamped now (cheap: the reads of the logs, and the
        import of TensorBoard, happen on that thread, never on the sampler's)."""
        if self.options.track_dir or self.options.replay_path:
            return []  # effmon run: the callback reports every step; a replay has no job
        self.last = (now, time.monotonic())
        if self.worker is None:
            self.worker = threading.Thread(target=self._watch, name="effmon-trainer-logs", daemon=True)
            self.worker.start()
        return self._hand_out(now)

    def drain(self) -> list[Row]:
        """The recording ends: the reader thread stops, the logs are read once more, and every step found since
        the last read is handed out (none is lost to the timing of the last read)."""
        if self.worker is None or self.last is None:
            return []
        self.stopping.set()
        self.worker.join(5)
        if not self.worker.is_alive():
            self._collect()
        now, mono = self.last
        return self._hand_out(now + time.monotonic() - mono)

    def _watch(self) -> None:
        while True:
            self._collect()
            if self.stopping.wait(READ_EVERY_S):
                return

    def _collect(self) -> None:
        folders = self._folders()
        self.ticks += 1
        # between searches only the logs already found are read again (a search globs the job's folders)
        self.search = self.ticks % SEARCH_EVERY == 1 or not (self.found_run or self.found_state)
        held = self.job.open_files() if self.job is not None else set()
        rows = self._from_events(folders, held) + self._from_state(folders, held)
        if not self.announced and not self.waiting_said and self.job is not None:
            others = foreign(folders, self.job, held)
            if others:
                self.waiting_said = True
                rows.append(Row("notice", {"level": "info", "text": (
                    f"{len(others)} Trainer log file(s) under {others[0].parent} are an earlier run's (written before "
                    "this job started, not held open by it): not read; waiting for this job's own"
                )}))  # fmt: skip
        with self.lock:
            self.pending += rows

    def _hand_out(self, now: float) -> list[Row]:
        with self.lock:
            rows, self.pending = self.pending, []
        return [Row(r.entity, r.values | {"t": now}) if r.entity == "train_log" else r for r in rows]

    def _announce(self, kind: str, where: Path, text: str, level: str = "info") -> list[Row]:
        """A meta key and a notice, once per kind of log."""
        if kind in self.announced:
            return []
        self.announced.add(kind)
        return [Row("meta", {kind: os.fspath(where)}), Row("notice", {"level": level, "text": text})]

    def _from_state(self, folders: list[Path], held: set[str]) -> list[Row]:
        if self.search:
            self.found_state = newest_state(folders, self.job, held)
        path = self.found_state
        if path is None:
            return []
        try:
            stamp = (str(path), path.stat().st_mtime)
        except OSError:  # a checkpoint the job rotated away (save_total_limit): search again
            self.found_state = None
            return []
        if stamp == self.read_from:
            return []
        self.read_from = stamp
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return []  # being rewritten at this moment: the next read gets it
        rows = self._announce("trainer_state", path, f"step history read from {path}")
        if isinstance(doc.get("max_steps"), int) and doc["max_steps"] > 0:  # the job's own plan: step N / total
            rows.append(Row("meta", {"plan": {"total_steps": doc["max_steps"]}}))
        for entry in doc.get("log_history") or []:
            step = entry.get("step")
            if not isinstance(step, int) or "loss" not in entry or step in self.steps:
                continue
            self.steps.add(step)
            rows.append(log_row(step, {k: entry.get(v) for k, v in STATE_KEYS.items()}))
        return rows

    def _from_events(self, folders: list[Path], held: set[str]) -> list[Row]:
        if self.search:
            self.found_run = newest_events(folders, self.job, held)
        run = self.found_run
        if run is None:
            return []
        acc = self.runs.get(run)
        if acc is None:
            try:
                from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
            except ImportError:
                return self._announce(
                    "tensorboard_unread", run, f"TensorBoard event files in {run} are not read: the tensorboard "
                    "package is not installed (pip install 'effmon[tensorboard]')", "warning",
                )  # fmt: skip
            acc = self.runs[run] = EventAccumulator(os.fspath(run), size_guidance={"scalars": 0})
        try:
            acc.Reload()
            tags = set(acc.Tags().get("scalars", []))
            scalars = {k: {e.step: e.value for e in acc.Scalars(t)} for k, t in TB_TAGS.items() if t in tags}
        except Exception:  # a file being written or damaged: the next read tries again
            return []
        if "loss" not in scalars:
            return []
        rows = self._announce("tensorboard", run, f"step history read from TensorBoard events in {run}")
        for step in sorted(set(scalars["loss"]) - self.steps):
            self.steps.add(step)
            rows.append(log_row(step, {k: v.get(step) for k, v in scalars.items()}))
        return rows

    def close(self) -> None:
        self.stopping.set()


def find_job(pids: list[int]) -> tuple[list[Path], Job | None]:
    """The folders where the watched job writes, and what tells its files from an earlier run's."""
    import psutil

    folders: list[Path] = []
    named: list[Path] = []
    started: float | None = None
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            try:
                environ = proc.environ()
            except (psutil.AccessDenied, OSError):
                environ = {}
            cmdline, cwd = proc.cmdline(), proc.cwd()
            folders += job_folders(cmdline, cwd, environ)
            named += named_folders(cmdline, cwd, environ)
            created = proc.create_time()
            started = created if started is None else min(started, created)
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            continue
    return folders, Job(list(pids), named, started) if pids else None


def describe(folders: list[Path], job: Job | None = None) -> str:
    """One line for ``effmon attach``: where the history comes from, or how to get one (with ``job``: only the
    job's own files count, and an earlier run's are named as not read)."""
    from effmon.core.extras import missing

    held = job.open_files() if job is not None else set()
    run = newest_events(folders, job, held)
    if run is not None and missing("tensorboard"):
        return (
            f"TensorBoard events in {run} hold the loss per logged step, but the tensorboard package is not "
            "installed: pip install 'effmon[tensorboard]' to read them"
        )
    if run is not None:
        return f"loss, learning rate and gradient norm per logged step: read from TensorBoard events in {run}"
    path = newest_state(folders, job, held)
    if path is not None:
        return f"loss, learning rate and gradient norm per logged step: read from {path} as the job saves checkpoints"
    where = ", ".join(str(f) for f in folders[:2]) or "its working directory"
    others = foreign(folders, job, held) if job is not None else []
    earlier = (
        f" ({len(others)} file(s) there are an earlier run's, written before this job started: not read)"
        if others
        else ""
    )
    return (
        f"no trainer_state.json or TensorBoard events of this job under {where} yet{earlier}: a transformers Trainer "
        "writes the one at each checkpoint save (save_steps), the other at each logged step "
        "(report_to='tensorboard'); effmon reads them when they appear"
    )
