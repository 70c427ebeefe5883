"""EfficientLLM metrics against figures computed by hand from the real H100 trace."""

import json
from importlib import resources

import jsonschema
import pytest

from tests.conftest import TRAINER_TRACE, run_effmon
from tests.unit.test_metrics import gpu_lines


def test_efficientllm_export_validates_against_the_schema(phases_session, tmp_path):
    out = tmp_path / "run.json"
    res = run_effmon("report", str(phases_session), "--format", "efficientllm", "-o", str(out), "--phase", "generate")
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    schema = json.loads((resources.files("effmon") / "schemas" / "efficientllm.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["IT"] > 0 and doc["num_requests"] == 80 and len(doc["request_level"]["latencies"]) == 80
    assert doc["effmon"]["PCU"]["source"] == "nvml_gpm_sm_active"
    assert len(doc["time_series"]["timestamps"]) == len(doc["time_series"]["power_consumption"]) > 100
    train = tmp_path / "train.json"
    assert (
        run_effmon(
            "report", str(phases_session), "-f", "efficientllm", "-o", str(train), "--phase", "lora_finetune"
        ).returncode
        == 0
    )
    tdoc = json.loads(train.read_text())
    jsonschema.validate(tdoc, schema)
    assert tdoc["ST"] > 0 and tdoc["num_requests"] == 159 and tdoc["effmon"]["run_kind"] == "training"


def test_mcr_through_the_command_line(phases_session):
    res = run_effmon(
        "report",
        str(phases_session),
        "-f",
        "json",
        "--precision",
        "int4",
        "--perf",
        "0.4361",
        "--baseline-precision",
        "bf16",
        "--baseline-perf",
        "0.4719",
    )
    assert res.returncode == 0, res.stderr
    assert round(json.loads(res.stdout)["MCR"]["value"], 4) == 3.6965


def test_csv_has_one_row_per_sample_and_gpu(phases_session):
    res = run_effmon("report", str(phases_session), "-f", "csv")
    assert res.returncode == 0
    rows = res.stdout.strip().splitlines()
    assert len(rows) == 1 + len(gpu_lines())
    header = rows[0].split(",")
    assert header[:3] == ["t", "t_rel_s", "gpu"] and "sm_active_pct" in header


def test_pretrain_shape(phases_session):
    res = run_effmon("report", str(phases_session), "-f", "efficientllm-pretrain", "--phase", "lora_finetune")
    doc = json.loads(res.stdout)
    assert set(doc) >= {"model_type", "model_size", "parameters", "context_length", "metrics"}
    assert set(doc["metrics"]) == {"ppl", "amu_gb", "al_seconds", "tt_tokens_per_param_per_sec", "aec_watts"}
    assert doc["parameters"] == 852559872


def test_per_param_throughput_is_null_with_a_reason_when_params_are_unknown(tmp_path):
    home = tmp_path / "h"
    assert (
        run_effmon(
            "record",
            "-q",
            "--replay",
            str(TRAINER_TRACE),
            "--as-fast-as-possible",
            env_home=home,
        ).returncode
        == 0
    )
    doc = json.loads(run_effmon("report", "last", "-f", "efficientllm", env_home=home).stdout)
    assert doc["ST"] is None and doc["effmon"]["per_param_null_reason"]
    assert doc["effmon"]["throughput"]["samples_per_s"] > 0
    doc = json.loads(run_effmon("report", "last", "-f", "efficientllm", "--params", "1000000", env_home=home).stdout)
    assert doc["ST"] == pytest.approx(doc["effmon"]["throughput"]["samples_per_s"] / 1e6)
    assert doc["effmon"]["PCU"]["source"] == "nvml_utilization_gpu"  # no GPM in that trace


def test_table_report_prints_the_metrics(phases_session):
    res = run_effmon("report", str(phases_session))
    assert res.returncode == 0
    for word in ("AMU", "PCU", "AEC", "GiB", "nvml_gpm_sm_active", "Per GPU"):
        assert word in res.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--window", "500:600"], "outside the session"),
        (["--window", "abc"], "use START:END"),
        (["--phase", "warmup"], "no phase 'warmup'"),
        (["--precision", "int4", "--perf", "-0.2", "--baseline-perf", "0.47"], "non-negative"),
        (["--perf", "0.4"], "needs both"),
        (["--precision", "int5", "--perf", "0.4", "--baseline-perf", "0.47"], "unknown precision"),
        (["-o", "/nonexistent-dir/x.json", "-f", "json"], "does not exist"),
    ],
)
def test_bad_report_input(phases_session, args, words):
    res = run_effmon("report", str(phases_session), *args)
    assert res.returncode == 2, res.stdout
    assert words in res.stderr and "Traceback" not in res.stderr


def test_empty_session_and_session_without_gpu(tmp_path):
    from effmon.core.declare import CORE_ENTITIES
    from effmon.core.store import SessionWriter

    (tmp_path / "h" / "sessions").mkdir(parents=True)
    w = SessionWriter(tmp_path / "h" / "sessions" / "empty.effmon", CORE_ENTITIES, {"name": "empty"})
    w.close()
    res = run_effmon("report", "empty", env_home=tmp_path / "h")
    assert res.returncode == 2 and "holds no samples" in res.stderr
    assert (
        run_effmon(
            "record",
            "-q",
            "--source",
            "host",
            "--host-interval",
            "0.1",
            "--name",
            "nogpu",
            "--",
            "sleep",
            "0.5",
            env_home=tmp_path / "h",
        ).returncode
        == 0
    )
    res = run_effmon("report", "nogpu", env_home=tmp_path / "h")
    assert res.returncode == 2 and "no GPU readings" in res.stderr
    show = run_effmon("sessions", "show", "nogpu", env_home=tmp_path / "h")
    assert show.returncode == 0 and "no GPU readings" in show.stdout
