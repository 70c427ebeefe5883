"""effmon serve: presets, the real transformers serve on 127.0.0.1 under load, and what goes wrong."""

import importlib.util
import json
import shutil
import socket

import pytest

from effmon.core.store import SessionReader
from effmon.presets import bundled, load
from tests.conftest import free_port, run_effmon

HAVE_TSERVE = shutil.which("transformers") is not None and importlib.util.find_spec("fastapi") is not None


def test_every_shipped_preset_resolves_to_a_command():
    for name in bundled():
        p = load(name)
        argv = p.command()
        assert argv and all(isinstance(a, str) for a in argv)
        if p.kind == "serve":
            assert p.fields["bits"] in (4, 8, 16, 32) and p.fields["precision"]
            if p.fields["engine"] == "vllm":
                assert argv[:3] == ["vllm", "serve", p.fields["model"]]
                assert "--port" in argv and "--max-model-len" in argv


def test_the_benchmarks_precisions_are_all_shipped():
    serve = [load(n) for n in bundled() if load(n).kind == "serve"]
    quant = {p.fields.get("quantization") for p in serve}
    assert {"awq", "gptq", "fp8", "bitsandbytes"} <= quant
    assert {"bf16", "fp16"} <= {p.fields["precision"] for p in serve}
    assert any(p.fields.get("kv_cache_dtype") == "fp8" for p in serve)


def test_vllm_presets_are_accepted_by_vllms_own_parser():
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (it is an optional extra: pip install 'effmon[vllm]')")
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils import FlexibleArgumentParser

    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
    for name in bundled():
        p = load(name)
        if p.kind == "serve" and p.fields["engine"] == "vllm":
            argv = p.command()[3:]  # after: vllm serve MODEL
            parser.parse_args(["--model", p.fields["model"], *[a for a in argv if a not in ("--host", "127.0.0.1")]])


@pytest.mark.skipif(not HAVE_TSERVE, reason="needs transformers[serving] (installed by the test extra)")
def test_serve_tiny_cpu_with_load_end_to_end(tmp_path):
    home = tmp_path / "h"
    res = run_effmon(
        "serve",
        "tiny-cpu",
        "--set",
        f"port={free_port()}",
        "--load",
        "--requests",
        "10",
        "--concurrency",
        "2",
        "--output-tokens",
        "12",
        env_home=home,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "healthy at" in res.stderr and "10 of 10 requests succeeded" in res.stdout
    session = sorted((home / "sessions").glob("*.effmon"))[0]
    with SessionReader(session) as r:
        meta = r.meta()
        rows = r.rows("request")
    assert meta["status"] == "complete" and meta["precision_bits"] == 32
    assert len(rows) == 10
    for row in rows:
        assert row["error"] is None
        assert 0 < row["ttft_s"] <= row["t_end"] - row["t_start"]  # TTFT <= E2E
    s = meta["load_summary"]
    assert s["tokens_counted_from"] == "the server's usage" and s["output_tokens"] == sum(
        x["generated_tokens"] for x in rows
    )
    # effmon serve hands the served model's own tokenizer to the load: re-encoding the decoded text agrees with the
    # server's usage within a few % (a BPE may merge differently), enough to give each chunk its tokens
    assert abs(s["tokenizer_vs_usage"] - 1.0) < 0.05 and s["itl_measured"].startswith("per token")
    report = json.loads(run_effmon("report", str(session), "-f", "efficientllm", env_home=home).stdout)
    assert report["IT"] > 0 and report["num_requests"] == 10 and report["AL"] > 0
    pid = meta["pid"]
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # the server stopped


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run_effmon("serve", "tiny-cpu", "--set", f"port={port}", "--headless", env_home=tmp_path / "h")
    if not HAVE_TSERVE:
        assert res.returncode == 2 and "transformers[serving]" in res.stderr
        return
    assert res.returncode == 2 and f"port {port} is in use" in res.stderr


def test_vllm_not_installed(tmp_path):
    if shutil.which("vllm"):
        pytest.skip("vLLM is installed here")
    res = run_effmon("serve", "qwen2.5-7b-awq", "--headless", env_home=tmp_path / "h")
    assert res.returncode == 2 and "pip install 'effmon[vllm]'" in res.stderr and "tiny-cpu" in res.stderr


def test_a_model_path_that_is_not_there(tmp_path):
    res = run_effmon("serve", "tiny-cpu", "--set", "model=/no/such/model", "--headless", env_home=tmp_path / "h")
    if not HAVE_TSERVE:
        pytest.skip("needs transformers[serving]")
    assert res.returncode == 2 and "model path /no/such/model does not exist" in res.stderr


@pytest.mark.skipif(not HAVE_TSERVE, reason="needs transformers[serving]")
def test_a_model_the_server_cannot_find_dies_with_a_diagnosis(tmp_path):
    home = tmp_path / "h"  # HF_HUB_OFFLINE=1 (conftest): a hub id cannot be fetched
    res = run_effmon(
        "serve",
        "tiny-cpu",
        "--set",
        "model=no-such-org/no-such-model",
        "--set",
        f"port={free_port()}",
        "--headless",
        "--timeout",
        "120",
        env_home=home,
        timeout=200,
    )
    assert res.returncode == 1
    assert "before it was healthy" in res.stderr and "the model was not found" in res.stderr
    session = sorted((home / "sessions").glob("*.effmon"))[0]
    with SessionReader(session) as r:
        assert r.meta()["status"] == "failed"


@pytest.mark.skipif(not HAVE_TSERVE, reason="needs transformers[serving]")
def test_a_server_that_never_becomes_healthy_in_time(tmp_path):
    res = run_effmon(
        "serve",
        "tiny-cpu",
        "--set",
        f"port={free_port()}",
        "--headless",
        "--timeout",
        "0.5",
        env_home=tmp_path / "h",
        timeout=120,
    )
    assert res.returncode == 1 and "not healthy within 0.5 s" in res.stderr


def test_training_and_serving_presets_are_not_mixed(tmp_path):
    res = run_effmon("run", "--preset", "tiny-cpu", env_home=tmp_path / "h")
    assert res.returncode == 2 and "effmon serve tiny-cpu" in res.stderr
    res = run_effmon("serve", "lora-tiny", env_home=tmp_path / "h")
    assert res.returncode == 2 and "effmon run --preset lora-tiny" in res.stderr


@pytest.mark.skipif(not HAVE_TSERVE, reason="needs transformers[serving]")
def test_ctrl_c_stops_the_server_and_keeps_the_session(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    import psutil

    home = tmp_path / "h"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "effmon", "serve", "tiny-cpu", "--set", f"port={port}", "--headless"],
        env=dict(os.environ, EFFMON_HOME=str(home)),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    session = sorted((home / "sessions").glob("*.effmon"))[0]
    with SessionReader(session) as r:
        meta = r.meta()
    assert meta["status"] == "interrupted"
    assert not psutil.pid_exists(meta["pid"]) or psutil.Process(meta["pid"]).status() == psutil.STATUS_ZOMBIE
