"""Training: effmon run with the transformers/PEFT presets, effmon.track, attach with history, bad input.

Real subprocesses, a real Trainer on the CPU with a tiny random-weight Llama and a tokenizer trained
in the test run; no hub access (HF_HUB_OFFLINE=1).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from effmon.core.store import SessionReader
from tests.conftest import run_effmon

pytest.importorskip("transformers")
pytest.importorskip("peft")


def session_of(home: Path) -> Path:
    files = sorted((home / "sessions").glob("*.effmon"))
    assert len(files) == 1, files
    return files[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One headless run per PEFT method (the slow part, shared by the checks below)."""
    out = {}
    for method in ("lora", "rslora", "dora"):
        home = tmp_path_factory.mktemp(method)
        res = run_effmon(
            "run", "--headless", "--preset", f"{method}-tiny", "--set", "steps=40", env_home=home, timeout=300,
            env={**os.environ, "EFFMON_PROGRESS_EVERY_S": "1"},
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        assert "effmon: step " in res.stderr and "/40 (" in res.stderr, res.stderr[-3000:]  # headless progress
        # a quiet start: the libraries' notices (torchao's CUDA kernels, deprecations) are in a log, not on screen
        for noise in ("Failed to load", "FutureWarning", "DeprecationWarning", "is deprecated", "Setting accelerator"):
            assert noise not in res.stderr, res.stderr[:3000]
        path = session_of(home)
        trainer_log = json.loads((path.with_suffix(".out") / "trainer_log.json").read_text())
        out[method] = (path, trainer_log)
    return out


@pytest.mark.parametrize("method", ["lora", "rslora", "dora"])
def test_every_step_is_recorded_with_the_trainers_token_count(runs, method):
    path, log = runs[method]
    with SessionReader(path) as r:
        steps = sorted(r.rows("train_step"), key=lambda s: s["step"])
        meta = r.meta()
    assert [s["step"] for s in steps] == list(range(1, 41))  # every one of the preset's 40 steps
    assert sum(s["tokens"] for s in steps) == log["num_input_tokens_seen"]
    assert all(s["samples"] == 4 for s in steps)
    losses = {e["step"]: e["loss"] for e in log["log_history"] if "loss" in e}
    assert all(s["loss"] == pytest.approx(losses[s["step"]]) for s in steps)
    assert meta["preset"]["name"] == f"{method}-tiny" and meta["run_kind"] == "training"
    # step N / total in the dashboard and the progress lines: the Trainer's own plan
    assert meta["plan"] == {"total_steps": log["max_steps"]}  # max_steps given: the epochs do not end the run


@pytest.mark.parametrize("method", ["lora", "rslora", "dora"])
def test_tokens_per_second_agree_with_the_trainers_log_history(runs, method):
    """Steps 2..N: tokens over the wall time between two logged steps, against the Trainer's own log (tokens
    seen, runtime). (Over the steps' own time, begin to end, effmon's rate is higher: data loading and logging
    between steps are not in it, tests/e2e/test_training_scale.py.)"""
    path, log = runs[method]
    entries = [e for e in log["log_history"] if "loss" in e and "train_runtime" in e]
    if len(entries) < 10:
        pytest.skip("this transformers version logs no running train_runtime")
    first, last = entries[0], entries[-1]
    trainer_tps = (last["num_input_tokens_seen"] - first["num_input_tokens_seen"]) / (
        last["train_runtime"] - first["train_runtime"]
    )
    with SessionReader(path) as r:
        steps = sorted(r.rows("train_step"), key=lambda s: s["step"])
    later = [s for s in steps if first["step"] < s["step"] <= last["step"]]
    by_step = {s["step"]: s for s in steps}
    effmon_tps = sum(s["tokens"] for s in later) / (by_step[last["step"]]["t_end"] - by_step[first["step"]]["t_end"])
    assert effmon_tps == pytest.approx(trainer_tps, rel=0.02)


@pytest.mark.parametrize("method", ["lora", "rslora", "dora"])
def test_parameter_counts_and_peft_method(runs, method):
    path, log = runs[method]
    with SessionReader(path) as r:
        model = r.meta()["model"]
    assert model["trainable_params"] == log["trainable_params"]  # PEFT's get_nb_trainable_parameters()
    assert model["params"] == log["params"]
    assert model["peft"]["method"] == method and model["peft"]["r"] == 8 and model["peft"]["alpha"] == 16


def test_report_gives_st_per_parameter(runs):
    path, log = runs["lora"]
    res = run_effmon("report", str(path), "-f", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ST"] == pytest.approx(doc["training"]["samples_per_s"] / log["params"], rel=1e-9)
    assert doc["AMU"]["gib"] is None  # no GPU on this machine: null, with the reason in notes
    assert any("no GPU readings" in n for n in doc["notes"])


LOOP = """
import sys, time
import torch
import effmon.track as et
model = torch.nn.Linear(16, 16)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
n = int(sys.argv[1]); pause = float(sys.argv[2])
for i in range(n):
    if i == n // 2:
        time.sleep(pause)
    x = torch.randn(8, 16)
    with et.step(tokens=8 * 16, samples=8):
        loss = model(x).pow(2).mean()
        loss.backward(); opt.step(); opt.zero_grad()
    et.log(loss=loss.item())
et.flush()
"""


def test_a_plain_pytorch_loop_with_effmon_track(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    home = tmp_path / "h"
    res = run_effmon("run", "--headless", "--", sys.executable, str(script), "30", "0", env_home=home)
    assert res.returncode == 0, res.stderr
    with SessionReader(session_of(home)) as r:
        steps = r.rows("train_step")
    assert len(steps) == 30 and all(s["tokens"] == 128 and s["loss"] is not None for s in steps)


def test_attach_late_gets_the_history_since_start(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    track = tmp_path / "track"
    env = dict(os.environ, EFFMON_TRACK_DIR=str(track))
    proc = subprocess.Popen([sys.executable, str(script), "40", "4"], env=env)
    try:
        deadline = time.time() + 60
        while not list(track.glob("*.jsonl")) or sum(1 for _ in open(next(track.glob("*.jsonl")))) < 21:
            assert time.time() < deadline, "the loop never reported its first steps"
            time.sleep(0.2)
        home = tmp_path / "h"
        res = run_effmon("attach", "--headless", str(proc.pid), env_home=home, timeout=120)
    finally:
        proc.wait(60)
    assert res.returncode == 0, res.stderr
    with SessionReader(session_of(home)) as r:
        steps = sorted(s["step"] for s in r.rows("train_step"))
        assert r.meta()["mode"] == "pid"
    assert steps == list(range(1, 41))  # the 20 steps before attaching too


def test_the_watched_process_never_blocks_when_the_monitor_dies(tmp_path):
    """kill -9 of the effmon watching an instrumented process it did not start: the training goes on at full
    speed and finishes. (A job effmon launched is stopped with it instead: tests/e2e/test_faults.py.)"""
    script = tmp_path / "loop.py"
    script.write_text(LOOP.replace("et.flush()", "open(sys.argv[3], 'w').write(str(time.time()))"))
    done = tmp_path / "done"
    home = tmp_path / "h"
    env = dict(os.environ, EFFMON_HOME=str(home))
    job = subprocess.Popen([sys.executable, str(script), "3000", "8", str(done)], env=env)
    effmon = subprocess.Popen(
        [sys.executable, "-m", "effmon", "record", "--pid", str(job.pid)], env=env, stderr=subprocess.PIPE
    )
    deadline = time.time() + 30
    while not list(home.rglob("*.effmon")):
        assert time.time() < deadline and effmon.poll() is None, "effmon never started recording"
        time.sleep(0.2)
    time.sleep(1)
    assert job.poll() is None, "the job ended before its monitor was killed: the test proves nothing"
    effmon.send_signal(signal.SIGKILL)
    effmon.wait(10)
    assert job.wait(60) == 0 and done.exists(), "the training stopped when its monitor died"


def test_flushes_from_the_writer_thread_and_the_caller_lose_nothing(tmp_path, monkeypatch):
    """The writer thread and et.flush() from the training loop take turns on one file: every event not counted
    as dropped is in it, in order. (A tight loop starves the writer thread of the GIL until the caller's flush
    at the end: both then opened the file at once, and the second replaced the first's.)"""
    import json

    import effmon.track as et

    monkeypatch.setenv("EFFMON_TRACK_DIR", str(tmp_path))
    monkeypatch.setattr(et, "_tracker", None)
    n = 100_000
    for i in range(n):
        with et.step(tokens=i):
            pass
    et.flush()
    lines = [json.loads(x) for x in open(et.track_path(os.getpid(), str(tmp_path)))]
    steps = [x["tokens"] for x in lines if x["kind"] == "train_step"]
    assert steps == sorted(steps) and len(steps) + et.dropped() == n


def test_a_script_that_never_creates_a_trainer(tmp_path):
    home = tmp_path / "h"
    res = run_effmon("run", "--headless", "--", sys.executable, "-c", "print('no training here')", env_home=home)
    assert res.returncode == 0
    assert "no training steps were reported" in res.stderr
    assert session_of(home).exists()


def test_a_script_that_fails_at_import_keeps_the_session(tmp_path):
    home = tmp_path / "h"
    res = run_effmon("run", "--headless", "--", sys.executable, "-c", "import no_such_module_xyz", env_home=home)
    assert res.returncode == 1
    with SessionReader(session_of(home)) as r:
        assert r.meta()["exit_code"] == 1 and r.meta()["status"] == "failed"


def test_a_model_path_that_does_not_exist(tmp_path):
    home = tmp_path / "h"
    res = run_effmon("run", "--headless", "--preset", "lora-tiny", "--set", "model=./no/such/model", env_home=home)
    assert res.returncode == 2
    assert "model path ./no/such/model does not exist" in res.stderr
    assert session_of(home).exists()


@pytest.mark.parametrize(
    "toml, words",
    [
        ('kind = "train"\n[train]\nmodel = "tiny"\nrank = 8\n', "bad.toml:4: unknown key 'rank'"),
        ('kind = "train"\n[train]\nsteps = "ten"\n', "bad.toml:3: 'steps' must be int"),
        ('kind = "train"\n[train]\nmethod = "qlora2"\n', "method 'qlora2' is not one of"),
    ],
)
def test_bad_preset_files_name_the_key_file_and_line(tmp_path, toml, words):
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    res = run_effmon("run", "--headless", "--preset", str(bad), env_home=tmp_path / "h")
    assert res.returncode == 2 and words in res.stderr


def test_presets_list_and_show():
    res = run_effmon("presets")
    assert res.returncode == 0
    for name in ("lora-tiny", "rslora-tiny", "dora-tiny", "full-tiny"):
        assert name in res.stdout
    show = run_effmon("presets", "show", "dora-tiny", "--set", "r=16")
    assert "--method dora" in show.stdout and "--r 16" in show.stdout


def test_attach_to_a_pid_that_is_not_alive(tmp_path):
    res = run_effmon("attach", "--headless", "999999", env_home=tmp_path / "h")
    assert res.returncode == 2 and "no process with pid 999999" in res.stderr


def test_torchrun_ranks_report_into_one_session(tmp_path):
    """Two ranks under torchrun: each reports its own steps, the session knows the ranks."""
    import shutil

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    home = tmp_path / "h"
    res = run_effmon(
        "run",
        "--headless",
        "--",
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        "10",
        "0",
        env_home=home,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    with SessionReader(session_of(home)) as r:
        steps = r.rows("train_step")
        ranks = r.meta()["ranks"]
    assert sorted({s["rank"] for s in steps}) == [0, 1]
    assert sum(1 for s in steps if s["rank"] == 0) == sum(1 for s in steps if s["rank"] == 1) == 10
    assert sorted(x["rank"] for x in ranks) == [0, 1] and {x["local_rank"] for x in ranks} == {0, 1}
    doc = json.loads(run_effmon("report", str(session_of(home)), "-f", "json").stdout)
    # one optimizer step per step number, its latency the slowest rank's; each rank counts its own tokens
    slowest: dict[int, float] = {}
    for s in steps:
        slowest[s["step"]] = max(slowest.get(s["step"], 0.0), s["t_end"] - s["t_start"])
    assert doc["training"]["ranks"] == 2 and doc["training"]["steps"] == 10
    assert doc["training"]["tokens_per_s"] == pytest.approx(sum(s["tokens"] for s in steps) / sum(slowest.values()))


def test_ddp_communication_time_is_measured_apart(tmp_path):
    """A Trainer under DDP (two CPU ranks, gloo): each step carries its time in gradient all-reduce, and the
    export splits AL into computation + communication as the benchmark defines it."""
    import shutil

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    script = tmp_path / "ddp.py"
    out = str(tmp_path / "out")
    script.write_text(
        f"import sys\nsys.argv = [sys.argv[0], '--steps', '6', '--batch-size', '2', '--output-dir', "
        f"{out!r}]\nfrom effmon.recipes.finetune import main\nraise SystemExit(main())\n"
    )
    home = tmp_path / "h"
    res = run_effmon(
        "run",
        "--headless",
        "--",
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        env_home=home,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    with SessionReader(session_of(home)) as r:
        steps = r.rows("train_step")
    assert len(steps) == 12 and {s["rank"] for s in steps} == {0, 1}
    assert all(s["comm_s"] is not None and 0 < s["comm_s"] < s["t_end"] - s["t_start"] + 1.0 for s in steps)
    doc = json.loads(run_effmon("report", str(session_of(home)), "-f", "efficientllm", env_home=home).stdout)
    rl = doc["request_level"]
    assert len(rl["communication_times"]) == len(rl["latencies"]) == 6  # optimizer steps, not rank-steps
    for lat, comp, comm in zip(rl["latencies"], rl["computation_times"], rl["communication_times"], strict=True):
        assert comp + comm == pytest.approx(lat)
    assert doc["effmon"]["training"]["communication_measured"] is True
