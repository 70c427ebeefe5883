"""Attaching to a transformers Trainer job effmon did not start: its own logs (trainer_state.json, TensorBoard
events) are the step history, read as they grow, and only the job's own (never an earlier run's in the same folder).
Real Trainer jobs on the CPU; split from test_training_scale.py so the two run on separate workers."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from tests.e2e.test_training_scale import SCRIPTS, effmon, env_for, references  # noqa: E402


def late_attach(tmp_path: Path, ready: str, *job_args: str, env: dict[str, str] | None = None, before=None):
    """A Trainer job started without effmon, attached to (headless) once a file matching ``ready`` exists below
    its output folder; returns the attach result, the logged steps effmon stored, the Trainer's own logged
    losses and the home folder."""
    from effmon.core.store import SessionReader

    out, home = tmp_path / "out", tmp_path / "h"
    if before is not None:
        before(out)
    script = [sys.executable, str(SCRIPTS / "trainer_reference.py"), str(out), "--epochs", "2", "--log-sleep", "0.25"]
    job = subprocess.Popen(
        [*script, *job_args],
        cwd=tmp_path,
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not list(out.glob(ready)):
            assert job.poll() is None and time.time() < deadline, f"the job never wrote {ready}"
            time.sleep(0.2)
        res = subprocess.run(
            [sys.executable, "-m", "effmon", "attach", "--headless", str(job.pid)],
            capture_output=True, text=True, env=env_for(home) | (env or {}), timeout=300,
        )  # fmt: skip
    finally:
        job.wait(120)
    assert res.returncode == 0, res.stderr
    assert "steps, tokens and step times: no" in res.stderr and "effmon run -- COMMAND" in res.stderr
    ref = references(out, "reference")[0]
    logged = {e["step"]: e["loss"] for e in ref["log_history"] if "loss" in e}
    with SessionReader(next((home / "sessions").glob("*.effmon"))) as r:
        rows = {x["step"]: x for x in r.rows("train_log")}
    return res, rows, logged, home


def test_late_attach_to_a_trainer_job_says_what_it_sees_and_reads_the_trainers_state(tmp_path):
    """A Trainer job started without effmon, attached to mid-run: effmon says at once what it can and cannot
    see, and takes the logged steps from the job's own trainer_state.json (the losses the Trainer logged)."""
    res, rows, logged, home = late_attach(tmp_path, "trainer/checkpoint-*/trainer_state.json", "--save-steps", "5")
    assert "trainer_state.json" in res.stderr
    assert len(rows) >= 5 and sorted(rows) == list(range(1, len(rows) + 1))
    assert all(rows[s]["loss"] == pytest.approx(logged[s]) for s in rows)
    report = effmon(home, "report", "last")
    assert report.returncode == 0, report.stderr
    assert f"{len(rows)} logged steps, step 1-{len(rows)}" in " ".join(report.stdout.split())  # wrapped at 120


def test_late_attach_reads_a_jobs_tensorboard_events_between_checkpoints(tmp_path):
    """A Trainer job that saves no checkpoint but logs to TensorBoard: effmon reads its event files with
    TensorBoard's own reader as they grow, and every step it stores carries the loss, learning rate and epoch the
    Trainer logged for that step (its own log_history, written at the end)."""
    pytest.importorskip("tensorboard")
    res, rows, logged, home = late_attach(tmp_path, "trainer/runs/*/events.out.tfevents.*", "--report-to",
                                          "tensorboard")  # fmt: skip
    assert "TensorBoard events" in res.stderr
    assert len(rows) >= 5 and sorted(rows) == list(range(1, len(rows) + 1))  # no checkpoint: all from the events
    ref = {e["step"]: e for e in references(tmp_path / "out", "reference")[0]["log_history"] if "loss" in e}
    for step, row in rows.items():
        assert row["loss"] == pytest.approx(logged[step], rel=1e-6)  # float32 in the event file
        assert row["lr"] == pytest.approx(ref[step]["learning_rate"], rel=1e-6)
        assert row["epoch"] == pytest.approx(ref[step]["epoch"], rel=1e-6)
    # live: a step logged after attach is in the session within about a second of the Trainer writing it (the
    # event's own wall time, written by TensorBoard's writer in the job)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((tmp_path / "out" / "trainer" / "runs").iterdir())))
    acc.Reload()
    written = {e.step: e.wall_time for e in acc.Scalars("train/loss")}
    first_read = min(row["t"] for row in rows.values())
    delays = [rows[step]["t"] - written[step] for step in rows if written[step] > first_read + 1.0]
    assert len(delays) >= 5, (len(delays), len(rows))
    assert statistics.median(delays) <= 1.0 and max(delays) <= 2.0, sorted(delays)
    report = effmon(home, "report", "last")
    assert report.returncode == 0, report.stderr
    text = " ".join(report.stdout.split())  # wrapped at 120 columns, where the events' path (tmp_path) says
    assert "runs" in text and f"{len(rows)} logged steps, step 1-{len(rows)}" in text


def test_late_attach_says_how_to_read_tensorboard_events_when_tensorboard_is_missing(tmp_path):
    """The same job with the tensorboard package hidden from effmon: one line says what is missing and the
    install, and the attach still ends well."""
    from tests.e2e.test_first_contact import hidden

    res, rows, _, _ = late_attach(tmp_path, "trainer/runs/*/events.out.tfevents.*", "--report-to", "tensorboard",
                                  "--epochs", "1", env=hidden(tmp_path, "tensorboard"))  # fmt: skip
    assert "pip install 'effmon[tensorboard]'" in res.stderr and "Traceback" not in res.stderr
    assert rows == {}


def earlier_runs(out: Path) -> None:
    """Two earlier runs' logs in the job's output folder, as a reused ``--output_dir`` holds them: a checkpoint's
    trainer_state.json and a TensorBoard run (written by TensorBoard's own writer), 100 steps of loss 99, all
    written an hour before the job starts."""
    from torch.utils.tensorboard import SummaryWriter

    trainer = out / "trainer"
    state = trainer / "checkpoint-100" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    history = [{"step": i, "loss": 99.0, "learning_rate": 1.0, "epoch": i / 100} for i in range(1, 101)]
    state.write_text(json.dumps({"log_history": history, "max_steps": 100, "global_step": 100}))
    writer = SummaryWriter(str(trainer / "runs" / "earlier"))
    for i in range(1, 101):
        writer.add_scalar("train/loss", 99.0, i)
    writer.close()
    old = time.time() - 3600
    for path in trainer.rglob("*"):
        os.utime(path, (old, old))


def test_late_attach_never_takes_an_earlier_runs_history(tmp_path):
    """A reused output folder with two earlier runs' logs (a checkpoint's state, a TensorBoard run), attached to
    before the job's first log: every step effmon stores is the job's own (the losses its Trainer logged), none
    is the earlier runs' (loss 99), and effmon says it left the earlier files alone."""
    pytest.importorskip("tensorboard")
    ready = "trainer/runs/earlier/events.out.tfevents.*"  # there before the job starts: attach at once
    args = ("--report-to", "tensorboard", "--save-steps", "5", "--epochs", "1")
    res, rows, logged, _ = late_attach(tmp_path, ready, *args, before=earlier_runs)
    assert all(row["loss"] != 99.0 for row in rows.values()), rows
    assert all(rows[s]["loss"] == pytest.approx(logged[s], rel=1e-6) for s in rows)
    assert len(rows) >= 5, (rows, res.stderr)
    assert "earlier run" in res.stderr, res.stderr
