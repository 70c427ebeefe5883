"""Progress of a run, as a user sees it: the headless progress lines, ``effmon sessions`` for a live session, and
the time left they give, checked against the real remaining time of a steady job (real processes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

from effmon.core.store import SessionReader
from tests.conftest import REPO, run_effmon

JOB = REPO / "tests" / "data" / "steady_job.py"
LINE = re.compile(r"effmon: step (\d+)/(\d+) \(\d+%\) · .*? · ([0-9hms.]+(?: s)?) left")


def seconds(text: str) -> float:
    """``4.2 s``, ``1m05s``, ``1h02m03s`` in seconds."""
    if text.endswith(" s"):
        return float(text[:-2])
    h, _, rest = text.rpartition("h")
    m, _, s = rest.rstrip("s").partition("m")
    return float(h or 0) * 3600 + float(m or 0) * 60 + float(s or 0)


def test_time_left_is_the_real_time_left_and_sessions_shows_the_live_progress(tmp_path):
    """120 steps of 0.2 s: every progress line printed once the job is 20-60 % through says a time left within
    15 % of the time the job really took from that moment to its last step."""
    steps, step_s = 120, 0.2
    env = {**os.environ, "EFFMON_HOME": str(tmp_path), "EFFMON_PROGRESS_EVERY_S": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "effmon", "record", "--", sys.executable, str(JOB), str(steps), str(step_s)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    said: list[tuple[float, int, int, float]] = []  # (when, step, total, seconds left)
    live: list[dict] = []

    def sessions_while_live() -> None:
        time.sleep(6)
        res = run_effmon("sessions", "--json", env_home=tmp_path, timeout=60)
        live.extend(json.loads(res.stdout))

    asker = threading.Thread(target=sessions_while_live)
    asker.start()
    lines = []
    for line in proc.stderr:  # type: ignore[union-attr]
        lines.append(line)
        if m := LINE.search(line):
            said.append((time.time(), int(m[1]), int(m[2]), seconds(m[3])))
    assert proc.wait(60) == 0, "".join(lines)
    asker.join(60)
    path = next((tmp_path / "sessions").glob("*.effmon"))
    with SessionReader(path) as r:
        last_end = max(s["t_end"] for s in r.rows("train_step"))
    checked = [(when, step, left) for when, step, total, left in said if 0.2 <= step / total <= 0.6]
    assert len(checked) >= 3, "".join(lines)
    for when, step, left in checked:
        real = last_end - when
        assert abs(left - real) <= 0.15 * real, (step, left, real, "".join(lines))
    assert all(total == steps for _, _, total, _ in said)
    # effmon sessions, while it ran: live, with the job's progress
    (entry,) = live
    assert entry["status"] == "live", entry
    assert entry["progress"]["total"] == steps and 0 < entry["progress"]["done"] < steps, entry
    assert entry["progress"]["left_s"] > 0


def test_a_job_without_a_total_says_its_step_and_rate(tmp_path):
    """No plan: progress says the step and the rate, never a time left it cannot know."""
    script = tmp_path / "job.py"
    script.write_text(
        "import time\nimport effmon.track as et\n"
        "for i in range(30):\n    with et.step(tokens=10):\n        time.sleep(0.1)\net.flush()\n"
    )
    res = run_effmon(
        "record", "--", sys.executable, str(script), env_home=tmp_path, timeout=60,
        env={**os.environ, "EFFMON_PROGRESS_EVERY_S": "1"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    progress = [line for line in res.stderr.splitlines() if line.startswith("effmon: step ")]
    assert progress, res.stderr
    assert all("left" not in line and "/" not in line.split("·")[0] for line in progress), progress
    assert any("steps/s" in line for line in progress), progress


def test_quiet_keeps_progress_off(tmp_path):
    res = run_effmon(
        "record", "-q", "--", sys.executable, str(JOB), "10", "0.1", env_home=tmp_path, timeout=60,
        env={**os.environ, "EFFMON_PROGRESS_EVERY_S": "0.5"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "effmon: step" not in res.stderr


def test_attach_to_a_parent_of_several_instrumented_jobs_asks_which(tmp_path):
    """A shell that started two tracked jobs: `effmon attach SHELL` would record both as one; it names each job
    with its command and records nothing. Attaching to one of them records that one."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "EFFMON_TRACK_DIR")}
    env["TMPDIR"] = str(tmp_path)
    shell = subprocess.Popen(
        ["bash", "-c", f"{sys.executable} {JOB} 100 0.1 & {sys.executable} {JOB} 100 0.1 & wait"],
        env=env,
        start_new_session=True,
    )
    try:
        track = tmp_path / f"effmon-{os.geteuid()}" / "track"
        deadline = time.time() + 30
        while len(list(track.glob("*.jsonl")) if track.exists() else []) < 2:
            assert time.time() < deadline, "the jobs never started tracking"
            time.sleep(0.1)
        home = tmp_path / "h"
        res = run_effmon("attach", "--headless", str(shell.pid), env_home=home, timeout=60, env=env)
        assert res.returncode == 2, res.stderr
        assert "2 instrumented jobs" in res.stderr and res.stderr.count("steady_job.py 100 0.1") == 2, res.stderr
        assert not list((home / "sessions").glob("*.effmon")) if (home / "sessions").exists() else True
        job = int(res.stderr.split("effmon attach ")[1].split()[0])
        one = run_effmon("attach", "--headless", str(job), env_home=home, timeout=60, env=env)  # until it ends
        assert one.returncode == 0, one.stderr
    finally:
        os.killpg(shell.pid, 9)
        shell.wait(10)
