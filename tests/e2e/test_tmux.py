"""The real `effmon demo` binary in a real terminal (tmux) at 80x24, driven by keys."""

import os
import shutil
import subprocess
import sys
import time

import pytest

if shutil.which("tmux") is None:
    pytest.skip("tmux is not installed (.ci/run installs it)", allow_module_level=True)


def capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def wait_for(session: str, needle: str, timeout: float = 30.0) -> str:
    deadline = time.time() + timeout
    screen = ""
    while time.time() < deadline:
        screen = capture(session)
        if needle in screen:
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{needle!r} never appeared; screen:\n{screen}")


def effmon_in_tmux(session: str, home, *args: str, after: str = "sleep 60") -> None:
    """``effmon ARGS`` in a new detached tmux session at 80x24 (its home ``home``), then ``after`` in the same
    shell (the pane stays to be read)."""
    import shlex

    cmd = f"EFFMON_HOME={home} TERM=xterm-256color {sys.executable} -m effmon {shlex.join(args)}; {after}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd], check=True)


def test_demo_in_tmux_at_80x24(tmp_path):
    session = f"effmon-test-{os.getpid()}"
    done = tmp_path / "exit-code"
    cmd = (
        f"EFFMON_HOME={tmp_path / 'home'} TERM=xterm-256color {sys.executable} -m effmon demo --speed 20; "
        f"echo $? > {done}; sleep 30"
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd], check=True)
    try:
        wait_for(session, "EfficientLLM so far")
        screen = wait_for(session, "GPU 0 · H100 80GB HBM3")
        lines = screen.splitlines()
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        assert "GPU 0 · H100 80GB HBM3" in screen and "● recording" in screen
        assert "q quit" in screen
        wait_for(session, "tokens/s", 20)
        subprocess.run(["tmux", "send-keys", "-t", session, "?"], check=True)
        wait_for(session, "Data sources")
        subprocess.run(["tmux", "send-keys", "-t", session, "Escape"], check=True)
        time.sleep(0.5)
        subprocess.run(["tmux", "send-keys", "-t", session, "w"], check=True)
        wait_for(session, "window 1 h")
        subprocess.run(["tmux", "send-keys", "-t", session, "c"], check=True)
        wait_for(session, "GPU 0 · power")
        subprocess.run(["tmux", "send-keys", "-t", session, "p"], check=True)
        wait_for(session, "paused")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.time() + 20
        while not done.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert done.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    sessions = list((tmp_path / "home" / "sessions").glob("demo-h100*.effmon")) + list(
        (tmp_path / "home" / "sessions").glob("*-demo-h100.effmon")
    )
    assert len(sessions) == 1
    from effmon.core.store import SessionReader

    with SessionReader(sessions[0]) as r:
        assert r.meta()["status"] in ("complete", "interrupted") and r.count("gpu") > 50


def test_a_run_ends_on_a_calm_screen_with_its_progress(tmp_path):
    """`effmon run` of a short tracked job at 80x24: step N / total and time left while it runs; at its end the
    header says `complete (exit 0)`, one line says what happened and what to do next, and no error is shown
    (the dashboard read the session while the recorder closed it: it once failed with "disk I/O error")."""
    session = f"effmon-end-{os.getpid()}"
    job = os.path.join(os.path.dirname(__file__), "..", "data", "steady_job.py")
    effmon_in_tmux(session, tmp_path / "home", "run", "--", sys.executable, job, "60", "0.15")
    try:
        running = wait_for(session, "/60 (", 30)
        assert "● recording" in running
        assert "python" in running and "steady_job.py 60" in running, running  # the job as people name it
        wait_for(session, " left", 20)
        screen = wait_for(session, "complete (exit 0)", 60)
        screen = wait_for(session, "✓ complete", 10)
        assert "step 60/60 (100%)" in screen and "effmon sessions show" in screen, screen
        time.sleep(3)  # a few more refreshes of a closed session
        screen = capture(session)
        assert "could not read" not in screen and "error" not in screen.lower(), screen
        assert "tokens/s" in screen, screen  # the final figures stay
        lines = screen.splitlines()
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_a_headless_run_on_a_terminal_has_a_progress_bar_under_the_jobs_output(tmp_path):
    """`effmon run --headless` in a terminal: the job's own lines scroll above a progress bar (step N / total,
    time left), nothing overwrites them, and they are kept, redacted, in the session's log."""
    session = f"effmon-bar-{os.getpid()}"
    script = tmp_path / "job.py"
    script.write_text(
        "import time\nimport effmon.track as et\nfor i in range(60):\n"
        "    print('job line', i, 'token=hunter2-secret')\n"
        "    with et.step(tokens=10, total=60):\n        time.sleep(0.1)\n"
    )
    effmon_in_tmux(session, tmp_path / "home", "run", "--headless", "--", sys.executable, str(script),
                   after="echo EXIT=$?; sleep 60")  # fmt: skip
    try:
        screen = wait_for(session, "/60", 30)
        bar = [line for line in screen.splitlines() if line.startswith("effmon step ")]
        assert bar and "left" in bar[-1] and "━" in bar[-1], screen
        assert "job line" in screen and "hunter2" not in screen, screen  # the job's output, redacted
        screen = wait_for(session, "EXIT=0", 40)
        assert "job line 59" in screen and "effmon step" not in screen, screen  # the bar goes when the job ends
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    log = next((tmp_path / "home" / "sessions").glob("*.log")).read_text()
    assert log.count("job line") == 60 and "hunter2" not in log
