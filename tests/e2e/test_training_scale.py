"""Training numbers at every scale, checked against figures effmon did not compute (issue 15).

The references: the Trainer's own state (``include_num_input_tokens_seen="non_padding"`` set by the test script,
not by effmon), what the script's own data collator saw, the script's own step clock, exact token arithmetic,
and for communication the step-time difference with and without gradient sync (``no_sync()``). Real torchrun
jobs with gloo on the CPU: one process, DDP 2 ranks, FSDP 2 ranks, 2 nodes x 2 ranks (two ``effmon run``).
"""

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

from tests.conftest import free_port  # noqa: E402

SCRIPTS = Path(__file__).parents[1] / "scripts"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def env_for(home: Path) -> dict[str, str]:
    return dict(os.environ, EFFMON_HOME=str(home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", COLUMNS="120")


def effmon(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "effmon", *args], capture_output=True, text=True, env=env_for(home), timeout=timeout
    )


def record(home: Path, *command: str, name: str = "job") -> None:
    res = effmon(home, "run", "--headless", "--name", name, "--", *command)
    assert res.returncode == 0, res.stderr[-3000:]


def two_ranks(home: Path, script: str, out: Path, *args: str) -> None:
    """``effmon run -- torchrun --nproc_per_node 2 SCRIPT OUT ARGS`` (gloo on the CPU)."""
    port = str(free_port())
    record(home, *TORCHRUN, "--nproc_per_node", "2", "--master_port", port, str(SCRIPTS / script), str(out), *args)


def export(home: Path, *refs: str, extra: tuple[str, ...] = ()) -> dict:
    res = effmon(home, "report", *refs, "--format", "efficientllm", *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    doc["_stderr"] = res.stderr
    return doc


def references(folder: Path, prefix: str) -> list[dict]:
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob(f"{prefix}-*.json"))]
    assert docs, f"the script wrote no {prefix} reference"
    return docs


def slowest_rank_mean(docs: list[dict]) -> float:
    """The reference step latency: per step, the slowest rank's own clock; averaged."""
    return statistics.mean(max(times) for times in zip(*(d["step_times"] for d in docs), strict=True))


def check_counts(doc: dict, refs: list[dict]) -> None:
    t = doc["effmon"]["training"]
    seen = [r["collator"] for r in refs]
    assert t["real_tokens"] == sum(s["real"] for s in seen)
    assert t["padded_tokens"] == sum(s["padded"] for s in seen)
    assert t["samples"] == sum(s["samples"] for s in seen)
    assert t["real_tokens"] == refs[0]["num_input_tokens_seen"]  # the Trainer's own (global) count
    assert doc["num_requests"] == t["steps"] == refs[0]["global_step"]  # optimizer steps, not rank-steps
    assert t["step_time_mean_s"] == pytest.approx(slowest_rank_mean(refs), rel=0.01)
    params = refs[0]["params"]
    assert doc["TT"] == pytest.approx(t["real_tokens"] / params / t["step_time_sum_s"], rel=1e-9)
    assert doc["ST"] == pytest.approx(t["samples"] / params / t["step_time_sum_s"], rel=1e-9)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    base = tmp_path_factory.mktemp("single")
    record(base / "h", sys.executable, str(SCRIPTS / "trainer_reference.py"), str(base / "out"))
    return base


def test_one_process_with_padding_eval_and_a_partial_last_batch(single):
    doc = export(single / "h", "last")
    refs = references(single / "out", "reference")
    check_counts(doc, refs)
    t = doc["effmon"]["training"]
    # exact arithmetic: 98 samples of known lengths, 4 epochs, every sample seen once an epoch
    assert t["real_tokens"] == refs[0]["exact_real_tokens"]
    assert t["samples"] == refs[0]["exact_samples"] == 392  # 13 batches an epoch, the last of 2 samples
    assert t["padded_tokens"] > t["real_tokens"]
    # evaluation is a phase of its own, outside every step (its time is not in AL)
    assert t["phases_s"]["eval"] > 0
    assert any("kept out of AL/TT/ST: eval" in n for n in doc["effmon"]["notes"])
    comm = doc["request_level"]["communication_times"]
    assert comm == [0.0] * t["steps"]  # one process: no communication, zeros rather than an empty list
    assert doc["effmon"]["tokens_counted"].startswith("real")
    model = doc["effmon"]["model"]
    assert model["peft"]["method"] == "lora" and model["peft"]["r"] == 4
    assert model["params"] == refs[0]["params"] and model["trainable_params"] == refs[0]["trainable_params"]
    assert model["precision"] == "fp32" and model["mixed_precision"] == "no"


def test_padded_positions_on_request_reproduce_the_benchmark_count(single):
    doc = export(single / "h", "last", extra=("--tokens", "padded"))
    refs = references(single / "out", "reference")
    t = doc["effmon"]["training"]
    assert t["tokens"] == refs[0]["collator"]["padded"] and t["tokens_counted"] == "padded"
    assert doc["TT"] == pytest.approx(t["padded_tokens"] / refs[0]["params"] / t["step_time_sum_s"], rel=1e-9)
    assert "padded" in doc["effmon"]["tokens_counted"]
    assert sum(doc["request_level"]["tokens"]) == refs[0]["collator"]["padded"]


def test_tokens_are_counted_without_the_trainers_help_and_its_logs_are_left_alone(tmp_path):
    """The Trainer's own token count off (its default): effmon no longer switches it on (a gather and a host sync
    per micro-batch under DDP, and entries in the user's logs), yet counts every token, by exact arithmetic."""
    out = tmp_path / "out"
    script = str(SCRIPTS / "trainer_reference.py")
    record(tmp_path / "h", sys.executable, script, str(out), "--epochs", "1", "--token-count", "no")
    doc = export(tmp_path / "h", "last")
    ref = references(out, "reference")[0]
    assert not any("num_input_tokens_seen" in e for e in ref["log_history"])
    assert doc["effmon"]["training"]["real_tokens"] == ref["exact_real_tokens"]
    assert doc["effmon"]["training"]["samples"] == ref["exact_samples"]


def test_ddp_two_ranks_counts_every_token_once(tmp_path):
    out = tmp_path / "out"
    two_ranks(tmp_path / "h", "trainer_reference.py", out)
    doc = export(tmp_path / "h", "last")
    refs = references(out, "reference")
    assert len(refs) == 2 and refs[0]["wrapper"] == "DistributedDataParallel"
    check_counts(doc, refs)
    t = doc["effmon"]["training"]
    assert t["ranks"] == 2 and set(t["rank_step_time_mean_s"]) == {"0", "1"}
    assert t["rank_spread_mean_s"] >= 0
    for rank, ref in enumerate(refs):  # per-rank step times kept, against each rank's own clock
        assert t["rank_step_time_mean_s"][str(rank)] == pytest.approx(statistics.mean(ref["step_times"]), rel=0.01)
    comm = doc["request_level"]["communication_times"]
    assert len(comm) == t["steps"] and all(c >= 0 for c in comm)  # exposed communication, measured per step
    assert t["communication_busy_s_sum"] > 0


def test_fsdp_two_ranks(tmp_path):
    out = tmp_path / "out"
    two_ranks(tmp_path / "h", "fsdp_loop.py", out)
    doc = export(tmp_path / "h", "last")
    refs = references(out, "fsdp")
    assert refs[0]["wrapper"].startswith("FSDP")
    t = doc["effmon"]["training"]
    assert t["real_tokens"] == sum(r["real"] for r in refs)
    assert t["padded_tokens"] == sum(r["padded"] for r in refs)
    assert t["samples"] == sum(r["samples"] for r in refs)
    assert doc["num_requests"] == t["steps"] == refs[0]["steps"]
    assert t["step_time_mean_s"] == pytest.approx(slowest_rank_mean(refs), rel=0.01)


def test_deepspeed_zero2_two_ranks_counts_and_times_as_ddp_does(tmp_path):
    """The Trainer under DeepSpeed ZeRO stage 2 (its CPU accelerator), 2 ranks: tokens, samples, optimizer steps
    and step times against the collators' own counts, the Trainer's token count and each rank's own clock, as
    under DDP; its collectives are said to be inside the step time, not timed apart."""
    pytest.importorskip("deepspeed")
    out = tmp_path / "out"
    two_ranks(tmp_path / "h", "trainer_reference.py", out, "--deepspeed", "2", "--epochs", "1")
    doc = export(tmp_path / "h", "last")
    refs = references(out, "reference")
    assert len(refs) == 2 and refs[0]["wrapper"] == "DeepSpeedEngine"
    check_counts(doc, refs)
    assert any("DeepSpeed collectives are not timed apart" in n for n in doc["effmon"]["notes"])


def test_two_nodes_of_two_ranks_are_one_run(tmp_path):
    """Two ``effmon run``, one per node group of a torchrun job (static rendezvous on 127.0.0.1): each session
    holds its node's ranks; a report of either takes the job as one."""
    home, out, port = tmp_path / "h", tmp_path / "out", free_port()

    def command(node_rank: int) -> list[str]:
        # torchrun's static rendezvous (node ranks, one master address), as batch schedulers launch it: the
        # elastic c10d backend polls its store all run long and fails the job when the node hosting that store
        # exits first (pytorch/pytorch#69197), a torchrun race on a busy 2-core machine, not effmon's
        return [
            *TORCHRUN,
            "--nnodes",
            "2",
            "--nproc_per_node",
            "2",
            "--node-rank",
            str(node_rank),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "--rdzv-id",
            "job42",
            str(SCRIPTS / "trainer_reference.py"),
            str(out),
        ]

    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "effmon", "run", "--headless", "--name", f"node{i}", "--", *command(i)],
            env=env_for(home),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in nodes:
        _, errors = p.communicate(timeout=300)
        assert p.returncode == 0, errors[-3000:]
    refs = references(out, "reference")
    assert len(refs) == 4
    for ref in ("node0", "node1"):
        doc = export(home, ref)
        assert "job job42: 2 node sessions taken as one run" in doc["_stderr"]
        check_counts(doc, refs)
        assert doc["effmon"]["training"]["ranks"] == 4
        assert doc["effmon"]["session"]["name"] == "job-job42"
    both = export(home, "node0", "node1")
    assert both["effmon"]["training"] == doc["effmon"]["training"]
    # compare takes the job as one run too
    res = effmon(home, "compare", "node0", "node1", "--format", "json")
    assert res.returncode == 0, res.stderr
    steps = json.loads(res.stdout)
    assert steps["runs"] == ["job-job42", "job-job42"]


def test_exposed_communication_matches_the_no_sync_difference(tmp_path):
    """Exposed communication (what a step waits for gradient sync beyond its computation) against the same
    batches stepped without sync: their step-time difference, measured by the script's own clock."""
    out = tmp_path / "out"
    two_ranks(tmp_path / "h", "ddp_comm.py", out)
    doc = export(tmp_path / "h", "last")
    refs = references(out, "comm")
    synced = [max(x) for x in zip(*(r["synced"] for r in refs), strict=True)]
    local = [max(x) for x in zip(*(r["no_sync"] for r in refs), strict=True)]
    # each synced step is followed by the same step without sync: the median of those paired differences
    # (a slow spell of the machine falls on both halves of a pair and cancels)
    reference = statistics.median(a - b for a, b in zip(synced, local, strict=True))
    exposed = statistics.median(doc["request_level"]["communication_times"])
    assert reference > 0.002, "the reference shows no synchronisation cost: the test proves nothing"
    assert exposed == pytest.approx(reference, rel=0.25)
    busy = doc["effmon"]["training"]["communication_busy_s_sum"] / doc["effmon"]["training"]["steps"]
    assert busy > 0  # the all-reduce busy time is kept apart, labelled


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
