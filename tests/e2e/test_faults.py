"""Faults, injected for real (docs/reliability.md): kill -9, signals, a real tmux for SIGHUP, a server that
misbehaves, a stand-in NVML driver that hangs or loses a GPU, a file damaged on disk, concurrent starts, bad
input. In each, what was recorded is kept and the session's end says what happened."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from effmon.core.store import SessionReader
from tests.conftest import PHASES_TRACE, REPO, run_effmon, trace_lines
from tests.e2e.test_serve import HAVE_TSERVE, free_port

PY = sys.executable
SLEEPER = [PY, "-c", "import time; time.sleep(60)"]


def effmon_proc(home: Path, *args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, EFFMON_HOME=str(home), COLUMNS="120")
    return subprocess.Popen([PY, "-m", "effmon", *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)  # fmt: skip


def wait(predicate, timeout: float = 30.0, what: str = "the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def the_session(home: Path) -> Path:
    """The first session under `home`, once its recorder has written its first transaction (a file claimed a moment
    ago raises SessionStarting when read)."""
    path = wait(lambda: next(iter(sorted((home / "sessions").glob("*.effmon"))), None) if (home / "sessions").exists()
                else None, what="a session file")  # fmt: skip
    meta_of(path)
    return path


def meta_of(path: Path) -> dict:
    from effmon.core.store import SessionStarting

    def read() -> dict | None:
        try:
            with SessionReader(path) as r:
                return r.meta()
        except SessionStarting:
            return None

    return wait(read, 10, "the session's first write")


def count_of(session: Path, entity: str) -> int:
    with SessionReader(session) as r:
        return r.count(entity)


def job_of(home: Path) -> psutil.Process:
    """The job effmon launched, once the session names it."""
    session = the_session(home)
    launched = wait(lambda: meta_of(session).get("launched"), what="the job to start")
    return psutil.Process(launched["pid"])


def gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- effmon owns what it launches ------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["record", "run"])
def test_kill_9_of_effmon_stops_the_job_it_launched(tmp_path, command):
    proc = effmon_proc(tmp_path, command, "--", *SLEEPER)
    job = job_of(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait(lambda: gone(job), 10, "the job's end"), "the job outlived effmon"
    e = run_effmon("sessions", "--json", env_home=tmp_path)
    assert json.loads(e.stdout)[0]["status"] == "crashed"  # kept, openable, and said to be cut short


@pytest.mark.skipif(not HAVE_TSERVE, reason="needs transformers[serving] (installed by the test extra)")
def test_kill_9_of_effmon_serve_stops_the_server_and_frees_its_port(tmp_path):
    port = free_port()
    proc = effmon_proc(tmp_path, "serve", "tiny-cpu", "--headless", "--set", f"port={port}")
    server = job_of(tmp_path)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait(listening, 120, "the server to listen")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait(lambda: gone(server), 15, "the server's end")
    wait(lambda: not listening(), 10, "the port to be free")


def test_a_job_that_ignores_sigterm_is_shown_left_behind_and_effmon_stop_ends_it(tmp_path):
    stubborn = [PY, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"]
    proc = effmon_proc(tmp_path, "record", "--", *stubborn)
    job = job_of(tmp_path)
    time.sleep(0.5)  # the job has set its handler
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    assert not gone(job)  # it ignored the parent-death signal
    listed = run_effmon("sessions", env_home=tmp_path).stdout
    assert f"its job {job.pid} still runs" in listed and "effmon stop" in listed
    name = the_session(tmp_path).stem
    res = run_effmon("stop", name, "--timeout", "1", env_home=tmp_path)
    assert res.returncode == 0 and "killed" in res.stderr
    assert wait(lambda: gone(job), 5, "the job's end")


# -- signals: SIGTERM, SIGHUP, and the dashboard's stop paths --------------------------------------------------
def test_sigterm_to_record_is_passed_on_and_recorded(tmp_path):
    proc = effmon_proc(tmp_path, "record", "--", *SLEEPER)
    job = job_of(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143 or proc.returncode != 0
    meta = meta_of(the_session(tmp_path))
    assert meta["status"] == "interrupted" and meta["end_reason"] == "stopped by SIGTERM"
    assert meta["exit_code"] is not None and gone(job)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")
class TestInTmux:
    """A real terminal: its own tmux server (-L), killed to drop the 'SSH connection'."""

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.server, *args], capture_output=True, text=True, check=check)

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path):
        self.server = f"effmon-faults-{os.getpid()}-{time.monotonic_ns()}"
        self.home = tmp_path / "home"
        yield
        self.tmux("kill-server", check=False)

    def start(self, *args: str) -> None:
        cmd = (f"EFFMON_HOME={self.home} TERM=xterm-256color {PY} -m effmon {shlex.join(args)}; "
               f"echo EXIT=$?; sleep 60")  # fmt: skip
        self.tmux("new-session", "-d", "-s", "t", "-x", "80", "-y", "24", cmd)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t", check=False).stdout

    def ended(self) -> dict:
        """The session's end, written by effmon. If it does not come, effmon's threads' stacks (``kill -USR1``) and
        the pane's history say where it waits."""
        session = the_session(self.home)
        try:
            return wait(lambda: (m := meta_of(session))["status"] != "recording" and m, 60, "the session's end")
        except AssertionError as exc:
            with contextlib.suppress(Exception):
                os.kill(meta_of(session)["recorder_pid"], signal.SIGUSR1)
                time.sleep(1)
            history = self.tmux("capture-pane", "-p", "-S", "-300", "-t", "t", check=False).stdout
            raise AssertionError(f"{exc}; effmon's stacks and screen:\n{history}") from None

    def test_hangup_during_record_ends_the_session_and_the_job(self):
        self.start("record", "--", *SLEEPER)
        job = job_of(self.home)
        self.tmux("kill-server")
        meta = self.ended()
        assert meta["status"] == "interrupted" and meta["end_reason"] == "stopped by SIGHUP", meta
        assert meta["exit_code"] is not None
        assert wait(lambda: gone(job), 10, "the job's end")

    def test_q_then_ctrl_c_in_the_dashboard_records_a_true_end(self):
        self.start("run", "--", *SLEEPER)
        job = job_of(self.home)
        wait(lambda: "EfficientLLM" in self.screen(), 30, "the dashboard")
        self.tmux("send-keys", "-t", "t", "q")
        try:
            wait(lambda: "still running" in self.screen(), 10, "the still-running message")
        except AssertionError:  # a key pressed while Textual starts its input can be lost: a user presses again
            self.tmux("send-keys", "-t", "t", "q")
            try:
                wait(lambda: "still running" in self.screen(), 10, "the still-running message")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; screen:\n{self.screen()}") from None
        self.tmux("send-keys", "-t", "t", "C-c")
        meta = self.ended()
        assert meta["status"] == "interrupted" and meta["end_reason"] == "stopped by SIGINT"
        assert meta["exit_code"] is not None
        screen = wait(lambda: "EXIT=" in (s := self.screen()) and s, 15, "effmon to exit")
        assert "saved: interrupted (stopped by SIGINT)" in screen
        assert "effmon/" not in screen.replace("\n", "")  # no traceback of effmon's (the job's own is its log)
        assert wait(lambda: gone(job), 10, "the job's end")
        assert self.tmux("display", "-p", "-t", "t", "#{alternate_on}").stdout.strip() == "0"

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
    def test_a_signal_to_the_dashboard_restores_the_terminal_and_ends_the_session(self, sig):
        self.start("run", "--", *SLEEPER)
        job = job_of(self.home)
        wait(lambda: "EfficientLLM" in self.screen(), 30, "the dashboard")
        effmon = psutil.Process(meta_of(the_session(self.home))["recorder_pid"])
        effmon.send_signal(sig)
        meta = self.ended()
        assert meta["status"] == "interrupted" and meta["end_reason"] == f"stopped by {sig.name}"
        assert wait(lambda: gone(job), 10, "the job's end")
        if sig == signal.SIGTERM:
            screen = wait(lambda: "EXIT=" in (s := self.screen()) and s, 15, "effmon to exit")
            assert "effmon/" not in screen.replace("\n", "")
            assert self.tmux("display", "-p", "-t", "t", "#{alternate_on}").stdout.strip() == "0"
            assert self.tmux("display", "-p", "-t", "t", "#{mouse_any_flag}").stdout.strip() == "0"


def test_detach_survives_the_terminal_and_stop_ends_it(tmp_path):
    res = run_effmon("run", "--detach", "--", *SLEEPER, env_home=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    name = res.stdout.strip().splitlines()[-1]
    assert f"effmon replay {name}" in res.stderr and f"effmon stop {name}" in res.stderr
    session = the_session(tmp_path)
    assert session.stem == name
    job = job_of(tmp_path)
    recorder = psutil.Process(meta_of(session)["recorder_pid"])
    assert os.getsid(recorder.pid) != os.getsid(0)  # its own session: a hangup of ours never reaches it
    assert run_effmon("sessions", env_home=tmp_path).stdout.count("live") == 1
    stop = run_effmon("stop", name, env_home=tmp_path)
    assert stop.returncode == 0 and "ended: interrupted (stopped by SIGTERM)" in stop.stderr
    assert gone(job) or wait(lambda: gone(job), 5, "the job's end")
    assert run_effmon("stop", name, env_home=tmp_path).stderr.count("nothing to stop") == 1


@pytest.mark.skipif(shutil.which("nohup") is None, reason="needs coreutils' nohup")
def test_nohup_is_respected_a_hangup_stops_neither_effmon_nor_its_job(tmp_path):
    """``nohup effmon record -- JOB &`` then the SSH connection drops: the login shell sends SIGHUP to the job's
    process group, which nohup told to ignore it. effmon keeps it ignored (it used to stop the job: exit 129)."""
    proc = subprocess.Popen(["nohup", PY, "-m", "effmon", "record", "--", *SLEEPER], env=dict(os.environ,
                            EFFMON_HOME=str(tmp_path)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            process_group=0)  # fmt: skip
    job = job_of(tmp_path)
    os.killpg(proc.pid, signal.SIGHUP)  # as bash does to each job when its terminal hangs up
    time.sleep(1.5)
    assert proc.poll() is None and not gone(job), proc.stderr.read() if proc.poll() is not None else ""
    session = the_session(tmp_path)
    assert meta_of(session)["status"] == "recording"
    stop = run_effmon("stop", session.stem, env_home=tmp_path)  # the way to end it, as for --detach
    assert stop.returncode == 0 and "ended: interrupted (stopped by SIGTERM)" in stop.stderr, stop.stderr
    assert proc.wait(30) != 0 and wait(lambda: gone(job), 10, "the job's end")
    assert "Traceback" not in proc.stderr.read()


def test_detach_reports_a_command_that_cannot_start(tmp_path):
    res = run_effmon("record", "--detach", "--", "no-such-command-xyz", env_home=tmp_path)
    assert res.returncode != 0 and "command not found: no-such-command-xyz" in res.stderr


# -- load: one writer, malformed chunks, stops, failure share, back-off ----------------------------------------
BAD_CHUNKS = [
    b"data: 123\n\n",
    b'data: {"choices": ["not an object"]}\n\n',
    b'data: {"choices": [{"delta": "text"}]}\n\n',
    b'data: {"choices": [], "usage": "lots"}\n\n',
    b'data: {"choices": [], "usage": {"completion_tokens": "many"}}\n\n',
    b"data: " + b"x" * (600 * 1024) + b"\n\n",
]


def misbehaving_server() -> tuple[int, callable]:
    """An OpenAI-like server whose every other response is one of the malformed streams above."""
    from aiohttp import web

    count = {"n": 0}

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        n = count["n"]
        count["n"] += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if n % 2:
            await resp.write(BAD_CHUNKS[(n // 2) % len(BAD_CHUNKS)])
            return resp
        for i in range(3):
            body = {"choices": [{"index": 0, "delta": {"content": f" t{i}"}, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(body)}\n\n".encode())
        body = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"completion_tokens": 3}}
        await resp.write(f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n".encode())
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    port = free_port()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    wait(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10, "the server")
    return port, lambda: loop.call_soon_threadsafe(loop.stop)


def test_malformed_chunks_fail_their_request_never_the_load(tmp_path):
    port, stop = misbehaving_server()
    try:
        args = ("load", f"http://127.0.0.1:{port}", "--model", "m", "--requests", "24", "--concurrency", "4",
                "--json", str(tmp_path / "s.json"))  # fmt: skip
        strict = run_effmon(*args, env_home=tmp_path / "a")
        lenient = run_effmon(*args, "--max-failures", "60%", env_home=tmp_path / "b")
    finally:
        stop()
    assert "Traceback" not in strict.stderr + lenient.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["succeeded"] == 12 and s["errors"] == {"bad_stream": 12}, s["errors"]
    assert strict.returncode == 1 and "12 of 24 requests failed (50%, more than --max-failures 10%)" in strict.stderr
    assert lenient.returncode == 0
    with SessionReader(the_session(tmp_path / "b")) as r:
        assert r.meta()["status"] == "complete" and len(r.rows("request")) == 24


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_load_keeps_every_finished_request_and_prints_its_summary(tmp_path, sig):
    server = subprocess.Popen([PY, "-m", "tests.openai_server", "--port", str(port := free_port()), "--ttft", "0.05",
                               "--itl", "0.02"], cwd=REPO, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 20, "the server")
        proc = effmon_proc(
            tmp_path,
            "load",
            f"http://127.0.0.1:{port}",
            "--model",
            "m",
            "--duration",
            "60",
            "--concurrency",
            "8",
            "--output-tokens",
            "16",
            "--json",
            str(tmp_path / "s.json"),
        )
        session = the_session(tmp_path)
        wait(lambda: count_of(session, "request") >= 20, 30, "20 requests")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        server.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "requests that ended are kept" in err
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["succeeded"] >= 20 and s["cancelled"] <= 8 and "TTFT" in out
    meta = meta_of(session)
    with SessionReader(session) as r:
        rows = r.rows("request")
    assert meta["status"] == "interrupted" and meta["end_reason"].startswith(f"stopped by {sig.name}")
    assert len(rows) == s["requests"]  # every request the summary counts is in the session


def test_many_concurrent_requests_all_reach_the_session(tmp_path):
    server = subprocess.Popen([PY, "-m", "tests.openai_server", "--port", str(port := free_port()), "--ttft", "0",
                               "--itl", "0"], cwd=REPO)  # fmt: skip
    try:
        wait(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 20, "the server")
        res = run_effmon(
            "load",
            f"http://127.0.0.1:{port}",
            "--model",
            "m",
            "--requests",
            "1500",
            "--concurrency",
            "64",
            "--output-tokens",
            "4",
            "--json",
            str(tmp_path / "s.json"),
            env_home=tmp_path,
        )
    finally:
        server.kill()
    assert res.returncode == 0 and "Traceback" not in res.stderr
    with SessionReader(the_session(tmp_path)) as r:
        assert len(r.rows("request")) == 1500 == json.loads((tmp_path / "s.json").read_text())["succeeded"]


def test_load_backs_off_while_nothing_answers(tmp_path):
    res = run_effmon("load", f"http://127.0.0.1:{free_port()}", "--model", "m", "--duration", "2",
                     "--concurrency", "4", "--json", str(tmp_path / "s.json"), env_home=tmp_path)  # fmt: skip
    s = json.loads((tmp_path / "s.json").read_text())
    assert res.returncode == 1 and s["errors"] == {"connect": s["requests"]}
    # 4 workers, 50 ms doubling to 2 s: about 6 attempts each in 2 s, not the thousands of a tight loop
    assert 4 <= s["requests"] <= 40


# -- sources: a hung driver, a lost GPU ------------------------------------------------------------------------
def _record_on_stand_in(home: Path, monkeypatch, seconds: float, **faults):
    from effmon.core.clock import RealClock  # noqa: F401 - the real clock: real threads, real hangs
    from effmon.recording import Recording, RecordOptions
    from tests import trace_nvml

    nv = trace_nvml.make(time.time, **faults)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    rec = Recording("command", RecordOptions(name="faulty", sources=("nvml", "host"), quiet=True, hung_after_s=1.0))
    rec.open()
    rec.start()
    time.sleep(seconds)
    t0 = time.monotonic()
    rec.finish("complete", "the test ended")
    finish_s = time.monotonic() - t0
    nv.release.set()
    return rec, finish_s


def test_a_hung_driver_stops_only_its_own_source(home, monkeypatch):
    rec, finish_s = _record_on_stand_in(home, monkeypatch, 4.0, hang_after=1.0)
    assert finish_s < 3  # finishing never waits on the hung call
    with SessionReader(rec.path) as r:
        meta, notices = r.meta(), [text for _, _, text in r.notices()]
        gpu_t = [x["t"] for x in r.rows("gpu")]
        host_t = [x["t"] for x in r.rows("host")]
    start = meta["started_at"]
    assert gpu_t and max(gpu_t) - start < 1.5  # the GPU readings stop at the hang
    assert max(host_t) - start > 2.5  # the host source went on
    assert any("nvml.fast: a read has not returned since" in n for n in notices)
    assert "nvml.fast" in meta["hung"] and "stopped answering" in meta["end_reason"]
    from effmon.metrics import evaluate
    from effmon.tui.snapshot import alerts

    with SessionReader(rec.path) as r:
        assert any("nvml.fast stopped answering at t+" in n for n in evaluate(r).notes)
    assert any(a.startswith("nvml.fast stopped answering") for a in alerts(meta, start))


def test_a_lost_gpu_is_said_and_the_others_go_on(home, monkeypatch):
    rec, _ = _record_on_stand_in(home, monkeypatch, 3.0, gpus=2, lose=(0, 1.0))
    with SessionReader(rec.path) as r:
        meta, notices = r.meta(), [text for _, _, text in r.notices()]
        rows = r.rows("gpu")
    start = meta["started_at"]
    lost_at = meta["lost_gpus"]["0"] - start
    assert 0.9 < lost_at < 1.5
    assert max(x["t"] for x in rows if x["gpu"] == 0) - start < 1.5
    assert max(x["t"] for x in rows if x["gpu"] == 1) - start > 2.5
    assert any(n.startswith("GPU 0 lost") and "(at t+" in n for n in notices)
    from effmon.metrics import evaluate
    from effmon.tui.snapshot import alerts

    with SessionReader(rec.path) as r:
        assert any(n.startswith("GPU 0 was lost at t+") for n in evaluate(r).notes)
    assert alerts(meta, start)[0].startswith("GPU 0 lost at t+")
    pytest.importorskip("textual")
    from effmon.tui.app import make_app
    from tests.unit.test_tui import text_of

    async def shown() -> str:
        app = make_app(rec.path, mode="replay", sync=True, paused=True, cursor=start + 2.5)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            return text_of(app, "#header")

    assert "⚠ GPU 0 lost at t+1" in asyncio.run(shown())  # the dashboard's header says it


# -- damaged files, concurrent starts, bad input ---------------------------------------------------------------
def test_a_damaged_session_is_listed_checked_and_reported_from_what_reads(tmp_path, phases_session):
    home = tmp_path / "home"
    (home / "sessions").mkdir(parents=True)
    good, bad = home / "sessions" / "good.effmon", home / "sessions" / "bad.effmon"
    shutil.copy(phases_session, good)
    shutil.copy(phases_session, bad)
    size = bad.stat().st_size
    with open(bad, "r+b") as f:  # one page of garbage in the middle of the file
        f.seek(size // 2 // 4096 * 4096)
        f.write(os.urandom(4096))
    listed = run_effmon("sessions", env_home=home)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2  # both listed (copies: same name)
    checked = run_effmon("sessions", "check", "bad", env_home=home)
    assert checked.returncode == 1 and "session bad: damaged" in checked.stdout
    assert run_effmon("sessions", "check", "good", env_home=home).returncode == 0
    report = run_effmon("report", "bad", "-f", "json", env_home=home)
    assert report.returncode == 0 and "is damaged: using what can be read" in report.stderr
    assert json.loads(report.stdout)["training"]
    shown = run_effmon("sessions", "show", "bad", env_home=home)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr
    assert run_effmon("sessions", "check", "bad", "--salvage", env_home=home).returncode == 1
    assert run_effmon("report", "bad-salvaged", env_home=home).returncode == 0
    with open(bad, "r+b") as f:  # the first page (the table list) too: nothing can be read
        f.seek(0)
        f.write(b"\0" * 100 + os.urandom(3996))
    res = run_effmon("report", "bad", env_home=home)
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_a_session_being_created_is_listed_as_starting(tmp_path):
    (tmp_path / "sessions").mkdir(parents=True)
    (tmp_path / "sessions" / "new.effmon").touch()  # claimed; its first transaction not written yet
    res = run_effmon("sessions", env_home=tmp_path)
    assert res.returncode == 0 and "\tstarting\t" in res.stdout


def test_concurrent_starts_get_their_own_sessions(tmp_path):
    procs = [effmon_proc(tmp_path, "record", "--name", "same", "--", PY, "-c", "import time; time.sleep(1)")
             for _ in range(8)]  # fmt: skip
    codes = [p.wait(60) for p in procs]
    assert codes == [0] * 8, [p.stderr.read() for p in procs]
    assert len(list((tmp_path / "sessions").glob("same*.effmon"))) == 8


def _trace(tmp_path: Path, edit) -> Path:
    lines = trace_lines(PHASES_TRACE)
    edit(lines)
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _first(lines: list[dict], kind: str) -> dict:
    return next(x for x in lines if x["kind"] == kind)


def _gpu(lines: list[dict]) -> list[dict]:
    return [x for x in lines if x["kind"] == "gpu"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: _gpu(ls)[100].update(t=_gpu(ls)[100]["t"] + 1e9), "time jumps from"),
        (lambda ls: _gpu(ls)[100].update(t=_gpu(ls)[100]["t"] - 50), "time goes back"),
        (lambda ls: _first(ls, "train_step").update(tokens="many"), "'tokens' must be a finite"),
        (lambda ls: _gpu(ls)[5].update(power_w=float("nan")), "'power_w' must be a finite"),
        (lambda ls: _first(ls, "generate_batch").update(t_end=2e9), "far outside"),
    ],
)
def test_a_bad_trace_is_refused_before_recording(tmp_path, edit, message):
    res = run_effmon("record", "--replay", str(_trace(tmp_path, edit)), "--as-fast-as-possible",
                     env_home=tmp_path / "h", timeout=60)  # fmt: skip
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "h" / "sessions").exists() or not list((tmp_path / "h" / "sessions").glob("*.effmon"))


@pytest.mark.parametrize(
    "args",
    [
        ("record", "--rate", "nan", "--", "true"),
        ("report", "last", "--window", "nan:nan"),
        ("serve", "tiny-cpu", "--set", "port=70000"),
        ("run", "--preset", "lora-tiny", "--set", "lr=nan", "--headless"),
        ("presets", "show", "BINARY"),
        ("compare", "last", "BADJSON"),
        ("load", "http://127.0.0.1:9", "--model", "m", "--max-failures", "2"),
    ],
)
def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, phases_session, args):
    (tmp_path / "bin.toml").write_bytes(bytes(range(256)))
    (tmp_path / "bad.json").write_text("{not json")
    home = tmp_path / "h"
    (home / "sessions").mkdir(parents=True)
    shutil.copy(phases_session, home / "sessions" / "s.effmon")
    args = tuple(str(tmp_path / "bin.toml") if a == "BINARY" else str(tmp_path / "bad.json") if a == "BADJSON" else a
                 for a in args)  # fmt: skip
    res = run_effmon(*args, env_home=home)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "error" in res.stderr
