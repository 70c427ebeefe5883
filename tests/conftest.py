from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PHASES_TRACE = REPO / "effmon" / "data" / "h100_phases.jsonl"
"""The real H100 trace the package ships (effmon demo replays it)."""
TRAINER_TRACE = Path(__file__).resolve().parent / "data" / "h100_lora_trainer.jsonl"
"""A real transformers Trainer LoRA run on an H100: step durations and NVML without GPM."""

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def trace_lines(path: Path = PHASES_TRACE) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "effmon-home"
    monkeypatch.setenv("EFFMON_HOME", str(h))
    return h


def run_effmon(*args: str, env_home: Path | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if env_home is not None:
        env["EFFMON_HOME"] = str(env_home)
    env["COLUMNS"] = "120"
    return subprocess.run(
        [sys.executable, "-m", "effmon", *args], capture_output=True, text=True, env=env, timeout=timeout, **kw
    )


@pytest.fixture(scope="session")
def phases_session(tmp_path_factory) -> Path:
    """The real H100 trace replayed as fast as possible into a session (shared, read-only)."""
    from effmon.core.sessions import resolve
    from effmon.recording import RecordOptions, record_replay

    h = tmp_path_factory.mktemp("home")
    old = os.environ.get("EFFMON_HOME")
    os.environ["EFFMON_HOME"] = str(h)
    try:
        assert record_replay(str(PHASES_TRACE), RecordOptions(name="phases", quiet=True), as_fast_as_possible=True) == 0
        return resolve("phases")
    finally:
        if old is None:
            del os.environ["EFFMON_HOME"]
        else:
            os.environ["EFFMON_HOME"] = old
