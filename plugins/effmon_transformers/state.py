"""Late attach to a Trainer job effmon did not start: its own ``trainer_state.json`` is the step history.

The Trainer writes ``trainer_state.json`` into each ``checkpoint-N`` folder of its ``output_dir`` at every save;
its ``log_history`` holds, per logged step, the loss, learning rate, gradient norm, epoch and (when the job
counts them) the input tokens seen. This source finds the folder from the watched process's own arguments
(``--output_dir``) or its working directory, reads the newest state every few seconds with the standard JSON
reader, and stores each logged step once (``train_log``). It does nothing under ``effmon run`` (the callback
there reports every step as it ends) or where a job reports through ``effmon.track``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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

OUTPUT_FLAGS = ("--output_dir", "--output-dir", "--logging_dir", "--logging-dir")


def job_folders(cmdline: list[str], cwd: str | None) -> list[Path]:
    """Where a Trainer job writes: the folders its arguments name, else its working directory."""
    found: list[Path] = []
    for i, arg in enumerate(cmdline):
        for flag in OUTPUT_FLAGS:
            if arg == flag and i + 1 < len(cmdline):
                found.append(Path(cmdline[i + 1]))
            elif arg.startswith(flag + "="):
                found.append(Path(arg.split("=", 1)[1]))
    base = Path(cwd) if cwd else None
    out = [p if p.is_absolute() or base is None else base / p for p in found]
    if base is not None:
        out.append(base)
    return out


def newest_state(folders: list[Path]) -> Path | None:
    """The newest ``trainer_state.json`` in these folders, their ``checkpoint-*`` folders, or one level below."""
    candidates: list[Path] = []
    for folder in folders:
        for pattern in PATTERNS:
            candidates += [p for p in folder.glob(pattern) if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime)


class TrainerStateSource:
    name = "trainer_state"

    def __init__(self, options: SourceOptions):
        self.options = options
        self.channels = {"state": 5.0}
        self.folders: list[Path] | None = None
        self.steps: set[int] = set()
        self.read_from: tuple[str, float] | None = None
        self.announced = False

    def open(self) -> SourceInfo:
        return SourceInfo()

    def _folders(self) -> list[Path]:
        if self.folders is None:
            import psutil

            self.folders = []
            for pid in self.options.watched_pids():
                try:
                    proc = psutil.Process(pid)
                    self.folders += job_folders(proc.cmdline(), proc.cwd())
                except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                    continue
        return self.folders

    def read(self, channel: str, now: float) -> list[Row]:
        if self.options.extra.get("track_dir") or self.options.replay_path:
            return []  # effmon run: the callback reports every step; a replay has no job
        path = newest_state(self._folders())
        if path is None:
            return []
        stamp = (str(path), path.stat().st_mtime)
        if stamp == self.read_from:
            return []
        self.read_from = stamp
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return []  # being rewritten at this moment: the next read gets it
        rows: list[Row] = []
        if not self.announced:
            self.announced = True
            rows.append(Row("meta", {"trainer_state": os.fspath(path)}))
            rows.append(Row("notice", {"level": "info", "text": f"step history read from {path}"}))
        for entry in doc.get("log_history") or []:
            step = entry.get("step")
            if not isinstance(step, int) or "loss" not in entry or step in self.steps:
                continue
            self.steps.add(step)
            rows.append(
                Row(
                    "train_log",
                    {
                        "t": now,
                        "step": step,
                        "loss": entry.get("loss"),
                        "lr": entry.get("learning_rate"),
                        "grad_norm": entry.get("grad_norm"),
                        "epoch": entry.get("epoch"),
                        "tokens_seen": entry.get("num_input_tokens_seen"),
                    },
                )
            )
        return rows

    def close(self) -> None:
        pass


def describe(folders: list[Path]) -> str:
    """One line for ``effmon attach``: where the history comes from, or how to get one."""
    path = newest_state(folders)
    if path is not None:
        return f"loss, learning rate and gradient norm per logged step: read from {path} as the job saves checkpoints"
    where = ", ".join(str(f) for f in folders[:2]) or "its working directory"
    return (
        f"no trainer_state.json under {where} yet: a transformers Trainer writes one at each checkpoint save "
        "(save_steps); effmon reads it when it appears"
    )
