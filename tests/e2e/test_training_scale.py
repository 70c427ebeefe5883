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
    from effmon.core.store import SessionReader

    with SessionReader(next((tmp_path / "h" / "sessions").glob("*.effmon"))) as r:
        plan = r.session_meta().plan  # step N / total: the Trainer's own plan, said once (by rank 0)
    assert plan == {"total_steps": refs[0]["max_steps"], "epochs": 4.0}, plan
    assert refs[0]["max_steps"] == refs[0]["global_step"]


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
