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
