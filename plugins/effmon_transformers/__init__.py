"""transformers/PEFT integration: ``effmon run`` instruments ``transformers.Trainer`` with no change
to the user's script.

Through effmon's plugin hook it puts ``inject/`` on the launched command's PYTHONPATH; the
``sitecustomize`` there installs an import hook that adds a callback to every Trainer when (and only
if) ``transformers.trainer`` is imported. The callback reports through ``effmon.track``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from effmon.plugins import EngineSpec, Source, SourceOptions, SourceSpec, hookimpl

INJECT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inject")


@hookimpl
def effmon_launch_env(env: dict[str, str]) -> None:
    current = env.get("PYTHONPATH")
    env["PYTHONPATH"] = INJECT_DIR + (os.pathsep + current if current else "")


@hookimpl
def effmon_register_engines(register: Callable[[EngineSpec], None]) -> None:
    from effmon_transformers import engine

    register(
        EngineSpec(
            "transformers",
            "transformers serve on the CPU (or a GPU with --set extra_args)",
            engine.command,
            engine.available,
            "effmon serve with transformers serve needs transformers[serving] and torch: pip install 'effmon[serve]'",
            prepare=engine.prepare,
        )
    )


def _trainer_state(options: SourceOptions) -> Source:
    from effmon_transformers.state import TrainerStateSource

    return TrainerStateSource(options)


@hookimpl
def effmon_register_sources(register: Callable[[SourceSpec], None]) -> None:
    from effmon_transformers.state import TRAIN_LOG

    register(
        SourceSpec(
            "trainer_state",
            "Logged steps of a Trainer job effmon did not start, from its trainer_state.json or TensorBoard events "
            "(effmon attach)",
            (TRAIN_LOG,),
            _trainer_state,
        )
    )


@hookimpl
def effmon_attach_notes(pid: int, cmdline: list[str], cwd: str | None) -> list[str] | None:
    from effmon_transformers.state import OUTPUT_FLAGS, describe, find_job, newest_events, newest_state

    folders, job = find_job([pid])
    if not folders:
        return None
    logs = newest_state(folders) or newest_events(folders)  # any run's: is this a Trainer job at all?
    if logs is None and not any(a.split("=")[0] in OUTPUT_FLAGS for a in cmdline):
        return None  # nothing says this is a Trainer job
    return [describe(folders, job)]
