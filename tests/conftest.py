from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
PHASES_TRACE = REPO / "effmon" / "data" / "h100_phases.jsonl"
"""The real H100 trace the package ships (effmon demo replays it)."""
TRAINER_TRACE = Path(__file__).resolve().parent / "data" / "h100_lora_trainer.jsonl"
"""A real transformers Trainer LoRA run on an H100: step durations and NVML without GPM."""

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A suite started in the background by a script (`bash .ci/run &`) inherits SIGINT ignored, and so would every command
# a test starts: Python and effmon keep an inherited ignored signal ignored (test_nohup_is_respected...). The tests
# that press Ctrl-C stand for a terminal's foreground job, whose SIGINT is at its default: give the suite that.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _become_subreaper() -> None:
    """Orphans of the processes a test starts (a server whose launcher died) are reparented to this process, not to
    init, so the leak check below still finds them (Linux; elsewhere the check sees direct descendants only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_CHILD_SUBREAPER = 36
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


_become_subreaper()


LONGEST_FIRST = (
    "test_training_scale.py", "test_training.py", "test_quant.py", "test_readme.py", "test_attach_trainer.py",
    "test_benchmarks.py", "test_security.py", "test_serve.py", "test_faults.py", "test_first_contact.py",
    "test_sweep.py", "test_load.py", "test_fleet.py",
)  # fmt: skip
"""Test files by their time on a 2-core machine, longest first (measured, `--durations=0`): the two workers take
files whole (``--dist loadfile``) in collection order, so the long ones start first and no worker is left alone
with one at the end. A file not listed keeps its place after these."""


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    order = {id(item): n for n, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), order[id(item)]))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _processes_end_with_their_test(request):
    """No test leaks a process: whatever a test started (effmon, a server, a fine-tune, their children) and left
    running is killed with its whole process group when the test ends; a test that passed but left one is told
    (processes of module and session fixtures were there before the test, and are theirs to stop)."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    left = [p for p in me.children(recursive=True) if p.pid not in before]
    if not left:
        return
    failed = any(getattr(request.node, f"report_{w}", None) and getattr(request.node, f"report_{w}").failed
                 for w in ("setup", "call"))  # fmt: skip
    if not failed:
        _, left = psutil.wait_procs(left, timeout=5)  # a process on its way out (a server stopping) gets its time
    names = _kill_groups(left)
    if names and not failed:
        pytest.fail(f"the test left processes running (killed now): {', '.join(names)}", pytrace=False)


def _kill_groups(procs: list[psutil.Process]) -> list[str]:
    names = []
    for p in procs:
        try:
            names.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
            pgid = os.getpgid(p.pid)
            if pgid == p.pid:  # the leader of its own group (start_new_session): the whole group goes
                os.killpg(pgid, signal.SIGKILL)
            else:
                p.kill()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    psutil.wait_procs(procs, timeout=5)
    return names


def trace_lines(path: Path = PHASES_TRACE) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "effmon-home"
    monkeypatch.setenv("EFFMON_HOME", str(h))
    return h


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at this moment (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_effmon(
    *args: str, env_home: Path | None = None, timeout: float = 120, env: dict | None = None, **kw
) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env)
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


@pytest.fixture
def server(request):
    """Start tests/openai_server.py (a streaming server with injected timing) in its own process; yields its base
    URL. Parametrize indirectly with its options: {"ttft": 0.1, "itl": 0.02, "no-usage": True ...}."""
    args = getattr(request, "param", {})
    port = free_port()
    cmd = [sys.executable, "-m", "tests.openai_server", "--port", str(port)]
    for key, value in args.items():
        cmd += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(proc.stdout.read())
    yield url
    proc.terminate()
    proc.wait(10)
