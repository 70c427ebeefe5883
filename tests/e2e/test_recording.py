"""Real recordings in real subprocesses: commands, pids, crashes, Ctrl-C, kill -9, bad input."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from effmon.core.store import SessionReader, SessionStarting
from tests.conftest import PHASES_TRACE, REPO, run_effmon


def only_session(home: Path) -> Path:
    files = sorted((home / "sessions").glob("*.effmon"))
    assert len(files) == 1, files
    return files[0]


def test_record_command_returns_its_exit_code_and_keeps_the_session(tmp_path):
    home = tmp_path / "h"
    res = run_effmon(
        "record",
        "--host-interval",
        "0.1",
        "--",
        sys.executable,
        "-c",
        "import time; time.sleep(1.0); raise SystemExit(3)",
        env_home=home,
    )
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    with SessionReader(only_session(home)) as r:
        meta = r.meta()
        assert meta["status"] == "failed" and meta["exit_code"] == 3
        assert meta["end_reason"] == "the command exited with status 3"
        assert meta["command"][0] == sys.executable
        assert r.count("host") >= 5
        watched = r.rows("watched")
        assert watched and watched[0]["pid"] == meta["pid"]
        assert max(w["rss_bytes"] for w in watched) > 1_000_000


def test_without_a_driver_recording_is_host_only_with_a_one_line_notice(tmp_path):
    pytest.importorskip("pynvml")
    home = tmp_path / "h"
    res = run_effmon("record", "--", "true", env_home=home)
    assert res.returncode == 0, res.stderr
    if "no NVIDIA driver" not in res.stderr:
        pytest.skip("this machine has an NVIDIA driver")
    notice = [line for line in res.stderr.splitlines() if "NVIDIA" in line]
    assert len(notice) == 1 and "effmon demo" in notice[0]
    assert "Traceback" not in res.stderr
    with SessionReader(only_session(home)) as r:
        assert "nvml" not in r.meta()["sources"] and "host" in r.meta()["sources"]
        assert any("no NVIDIA driver" in n[2] for n in r.notices())


def test_a_crashing_command_leaves_a_failed_session_with_its_status(tmp_path):
    home = tmp_path / "h"
    res = run_effmon(
        "record", "--", sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", env_home=home
    )
    assert res.returncode == 128 + signal.SIGSEGV
    with SessionReader(only_session(home)) as r:
        meta = r.meta()
    assert meta["status"] == "failed" and meta["exit_signal"] == signal.SIGSEGV
    assert meta["end_reason"] == f"the command was killed by signal {int(signal.SIGSEGV)}"
    assert meta["ended_at"] is not None  # the session itself was closed properly: every sample is kept


def test_secrets_never_reach_the_session(tmp_path):
    home = tmp_path / "h"
    env = dict(os.environ, EFFMON_HOME=str(home), HF_TOKEN="hf_" + "s" * 34)
    res = subprocess.run(
        [sys.executable, "-m", "effmon", "record", "--", sys.executable, "-c", "pass", "--api-key", "supersecretvalue"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    raw = only_session(home).read_bytes()
    assert b"supersecretvalue" not in raw and b"s" * 34 not in raw
    with SessionReader(only_session(home)) as r:
        assert r.meta()["env"]["HF_TOKEN"] == "<redacted>"


def test_ctrl_c_stops_the_command_and_keeps_the_session(tmp_path):
    home = tmp_path / "h"
    env = dict(os.environ, EFFMON_HOME=str(home))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "effmon",
            "record",
            "--host-interval",
            "0.1",
            "--",
            sys.executable,
            "-c",
            "import time; time.sleep(60)",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 90
    while time.time() < deadline:  # 10 host readings in the file, however long start-up took on a busy machine
        found = list((home / "sessions").glob("*.effmon")) if (home / "sessions").exists() else []
        if found:
            try:
                with SessionReader(found[0]) as r:
                    if r.count("host") >= 10:
                        break
            except SessionStarting:  # claimed a moment ago, its first transaction not written yet
                pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # to effmon alone: it passes it on to the command
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT, err
    with SessionReader(only_session(home)) as r:
        meta = r.meta()
        assert meta["status"] == "interrupted" and meta["exit_code"] == 130
        assert r.count("host") >= 10  # what was recorded before the stop is kept


def test_kill_9_loses_at_most_a_second(tmp_path):
    home = tmp_path / "h"
    env = dict(os.environ, EFFMON_HOME=str(home))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "effmon",
            "record",
            "--host-interval",
            "0.1",
            "--",
            sys.executable,
            "-c",
            "import time; time.sleep(20)",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 20
        while not (home / "sessions").is_dir() or not list((home / "sessions").glob("*.effmon")):
            assert time.time() < deadline
            time.sleep(0.1)
        time.sleep(3.0)
        killed_at = time.time()
        proc.kill()
        proc.wait(10)
    finally:
        import psutil

        for child in psutil.Process().children(recursive=True):
            child.kill()
    path = only_session(home)
    with SessionReader(path) as r:
        last = max(x["t"] for x in r.rows("host"))
        first = min(x["t"] for x in r.rows("host"))
        assert r.meta()["status"] == "recording"
    assert killed_at - last <= 1.0, f"lost {killed_at - last:.2f} s of samples"
    assert last - first >= 2.0
    res = run_effmon("sessions", "show", str(path), env_home=home)
    assert res.returncode == 0, res.stderr
    assert "crashed" in res.stdout


def test_record_pid_until_the_process_exits(tmp_path):
    home = tmp_path / "h"
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    res = run_effmon("record", "--host-interval", "0.2", "--pid", str(target.pid), env_home=home)
    target.wait()
    assert res.returncode == 0, res.stderr
    with SessionReader(only_session(home)) as r:
        meta = r.meta()
        assert meta["mode"] == "pid" and meta["pid"] == target.pid
        assert r.count("watched") >= 3


def test_record_pid_that_exits_at_once(tmp_path):
    home = tmp_path / "h"
    # the process ends as soon as effmon's session exists (however long effmon took to start on a busy machine)
    code = "import glob, sys, time\nwhile not glob.glob(sys.argv[1] + '/sessions/*.effmon'):\n    time.sleep(0.01)"
    target = subprocess.Popen([sys.executable, "-c", code, str(home)])
    res = run_effmon("record", "--pid", str(target.pid), env_home=home)
    target.wait()
    assert res.returncode == 0, res.stderr
    assert "little was recorded" in res.stderr or "exited" in res.stderr
    with SessionReader(only_session(home)) as r:
        assert r.meta()["status"] == "complete"


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["record", "--pid", "999999"], 2, "no process with pid 999999"),
        (["record", "--", "no-such-command-xyz"], 127, "command not found: no-such-command-xyz"),
        (["record"], 2, "give one of"),
        (["record", "--replay", "/nonexistent/trace.jsonl"], 2, "trace file not found"),
        (["sessions", "show", "nope"], 2, "no session named 'nope'"),
        (["record", "--rate", "0", "--", "true"], 2, "must be positive"),
    ],
)
def test_bad_input_gets_one_line_and_a_nonzero_exit(tmp_path, args, code, words):
    res = run_effmon(*args, env_home=tmp_path / "h")
    assert res.returncode == code, res.stderr
    assert words in res.stderr
    assert "Traceback" not in res.stderr


def test_malformed_trace_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = PHASES_TRACE.read_text().splitlines()
    lines[5] = lines[5][:40]
    bad.write_text("\n".join(lines) + "\n")
    res = run_effmon("record", "--replay", str(bad), env_home=tmp_path / "h")
    assert res.returncode == 2
    assert f"{bad}:6: not valid JSON" in res.stderr


def test_truncated_trace_says_how_to_keep_the_complete_lines(tmp_path):
    cut = tmp_path / "cut.jsonl"
    text = PHASES_TRACE.read_text()
    cut.write_text(text[: len(text) // 2])
    res = run_effmon("record", "--replay", str(cut), env_home=tmp_path / "h")
    assert res.returncode == 2
    assert "truncated" in res.stderr and "head -n" in res.stderr


def test_unwritable_home_says_how_to_fix_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = run_effmon("record", "--", "true", env_home=blocker / "sub")
    assert res.returncode == 2
    assert "cannot write sessions" in res.stderr and "EFFMON_HOME" in res.stderr
    assert "Traceback" not in res.stderr


def test_full_session_stops_recording_keeps_data_and_fails(tmp_path):
    """SQLite's 'database or disk is full' path, reached with a size cap instead of a real full disk."""
    home = tmp_path / "h"
    res = run_effmon(
        "record", "--max-size", "150KB", "--replay", str(PHASES_TRACE), "--as-fast-as-possible", env_home=home
    )
    assert res.returncode == 74, res.stderr
    assert "is full" in res.stderr and "kept" in res.stderr
    with SessionReader(only_session(home)) as r:
        assert 0 < r.count("gpu") < 1003
        assert r.meta()["status"] in ("failed", "recording")
    show = run_effmon("sessions", "show", "last", env_home=home)
    assert show.returncode == 0, show.stderr


def test_a_reader_sees_a_live_session_while_it_is_written(tmp_path):
    home = tmp_path / "h"
    env = dict(os.environ, EFFMON_HOME=str(home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "effmon", "record", "--replay", str(PHASES_TRACE), "--speed", "20", "--name", "live"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    counts = []
    try:
        path = home / "sessions" / "live.effmon"
        deadline = time.time() + 30
        while proc.poll() is None and time.time() < deadline:
            if path.exists():
                probe = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        "import sys; from effmon.core.store import SessionReader; "
                        "r = SessionReader(sys.argv[1]); print(r.count('gpu'), r.meta()['status'])",
                        str(path),
                    ],
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                )
                if probe.returncode == 0:
                    n, status = probe.stdout.split()
                    counts.append((int(n), status))
            time.sleep(0.5)
    finally:
        proc.wait(30)
    live = [n for n, status in counts if status == "recording"]
    grown = sorted({n for n in live if n})  # the very first look may come before the first sample
    assert len(grown) >= 3 and live == sorted(live)
    assert live[-1] < 1003


def test_sessions_list_shows_what_was_recorded(tmp_path):
    home = tmp_path / "h"
    assert (
        run_effmon(
            "record", "-q", "--replay", str(PHASES_TRACE), "--as-fast-as-possible", "--name", "one", env_home=home
        ).returncode
        == 0
    )
    assert (
        run_effmon(
            "record", "-q", "--name", "two", "--", sys.executable, "-c", "raise SystemExit(2)", env_home=home
        ).returncode
        == 2
    )
    res = run_effmon("sessions", env_home=home)
    assert res.returncode == 0
    assert "one" in res.stdout and "two" in res.stdout
    assert "H100" in res.stdout and "exit 2" in res.stdout
    show = run_effmon("sessions", "show", "one", env_home=home)
    assert "AMU" in show.stdout and "lora_finetune" in show.stdout


def test_not_a_session_file_is_refused(tmp_path):
    other = tmp_path / "x.effmon"
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.commit()
    res = run_effmon("sessions", "show", str(other), env_home=tmp_path / "h")
    assert res.returncode == 2 and "not an effmon session" in res.stderr + res.stdout
