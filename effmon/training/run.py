"""``effmon run``: a training command or preset, launched with the framework instrumentation.

Plugins add to the command's environment (the transformers integration puts a ``sitecustomize`` on its
PYTHONPATH), and every process of the run (all ranks of a torchrun job) reports steps into the session's
own track directory, beside the session file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from effmon.core.extras import need
from effmon.core.files import private_dir
from effmon.core.procs import Interrupts
from effmon.presets import Preset, PresetError, load
from effmon.recording import EXIT_USAGE, Launch, RecordError, Recording, RecordOptions, command_slug, record_command


def load_training_preset(name: str, overrides: list[str]) -> Preset:
    try:
        preset = load(name, overrides)
    except PresetError as exc:
        raise RecordError(str(exc), EXIT_USAGE) from None
    if preset.kind != "train":
        raise RecordError(f"preset {preset.name} is a serving preset: effmon serve {preset.name}", EXIT_USAGE)
    need("train", f"effmon run --preset {preset.name} (a transformers Trainer with PEFT)")
    return preset


def run_training(
    command: list[str],
    preset: Preset | None,
    options: RecordOptions,
    *,
    on_open: Callable[[Recording], None] | None = None,
    on_child: Callable[[subprocess.Popen[Any]], None] | None = None,
    capture_output: bool = False,
    interrupts: Interrupts | None = None,
) -> int:
    """Record ``command`` (or the preset's) instrumented; returns its exit status."""
    opened: list[Recording] = []

    def prepare(rec: Recording) -> Launch:
        opened.append(rec)
        track_dir = rec.path.with_suffix(".track")
        private_dir(track_dir)
        env = dict(os.environ, EFFMON_TRACK_DIR=str(track_dir))
        rec.source_options.track_dir = str(track_dir)
        rec.registry.launch_env(env)
        argv = preset.command(output_dir=str(rec.path.with_suffix(".out"))) if preset else command
        return Launch(argv, env)

    meta: dict[str, Any] = {}
    if preset is not None:
        meta.update(preset={"name": preset.name, "path": str(preset.path), **preset.train}, run_kind="training")
    code = record_command(
        command,
        options,
        mode="run",
        slug=preset.name if preset is not None else command_slug(command),
        meta=meta,
        prepare=prepare,
        on_open=on_open,
        on_child=on_child,
        capture_output=capture_output,
        interrupts=interrupts,
    )
    if opened and not opened[0].write_error:
        # every event is in the session now (redacted); the raw files the job wrote go (kept when writing failed)
        shutil.rmtree(opened[0].path.with_suffix(".track"), ignore_errors=True)
    if opened and not opened[0].live.counts.get("train_step"):
        print(
            "effmon: no training steps were reported: the command never created a transformers Trainer and "
            "does not use effmon.track (GPU and host metrics were recorded)",
            file=sys.stderr,
        )
    return code
