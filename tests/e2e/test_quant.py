"""Quantized serving that runs here (issue 20): the tiny model served by transformers serve at fp32, int8 and int4
(torchao, weight-only) under effmon, each loaded; the weights checked in their safetensors files; the perplexity
on the shipped text computed here from the logits (not by effmon); MCR = bits ratio x measured score ratio; and
compare showing all three."""

import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("torchao")

from tests.conftest import REPO, free_port, run_effmon  # noqa: E402

TEXT = REPO / "effmon" / "data" / "eval-text.txt"
PRESETS = {"tiny-cpu": 32, "tiny-cpu-int8": 8, "tiny-cpu-int4": 4}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The three presets served and loaded (4 requests each) in one effmon home; yields the home."""
    from concurrent.futures import ThreadPoolExecutor

    home = tmp_path_factory.mktemp("quant")
    env = {**os.environ, "EFFMON_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}

    def serve(preset):
        return subprocess.run([sys.executable, "-m", "effmon", "serve", preset, "--set", f"port={free_port()}",
                               "--load", "--requests", "4", "--output-tokens", "8", "-q", "--name", preset],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip

    first, *quantized = PRESETS  # the fp32 folder first (the others are made from it), then both side by side
    results = [serve(first)]
    with ThreadPoolExecutor(max_workers=len(quantized)) as pool:
        results += list(pool.map(serve, quantized))
    for res in results:
        assert res.returncode == 0, res.stderr[-3000:]
    return home


def meta(home, name):
    from effmon.core.store import SessionReader

    with SessionReader(home / "sessions" / f"{name}.effmon") as r:
        return r.meta()


def linear_weights(folder):
    """Each Linear layer's stored weight tensors (fp32 weight, or torchao's int8 qdata with its scales)."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if ".layers." in k and "norm" not in k}


def perplexity_here(folder):
    """The model's perplexity on the text, computed here from its logits (log-softmax of each next token), in the
    windows effmon documents (128 tokens predicted from those before them in the window)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok(TEXT.read_text(), return_tensors="pt").input_ids[0]
    nll, n = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, 128):
            chunk = ids[start : start + 129]
            logp = torch.log_softmax(model(input_ids=chunk[None]).logits[0, :-1].double(), dim=-1)
            nll -= float(logp.gather(1, chunk[1:, None]).sum())
            n += len(chunk) - 1
    return math.exp(nll / n)


def test_the_served_weights_are_really_quantized_and_the_session_says_how(served):
    for name, bits in PRESETS.items():
        m = meta(served, name)
        assert m["precision_bits"] == bits and m["status"] == "complete"
        folder = m["model_dir"]
        assert folder and folder.endswith({32: "tiny-llama", 8: "tiny-llama-int8", 4: "tiny-llama-int4"}[bits])
        if bits == 32:
            assert m["quantization"] is None
            continue
        assert m["quantization"] == {"method": "torchao", "config": "IntxWeightOnlyConfig",
                                     "weight_dtype": f"int{bits}", "bits": bits}  # fmt: skip
    from pathlib import Path

    import torch

    full = linear_weights(Path(meta(served, "tiny-cpu")["model_dir"]))
    params = sum(t.numel() for t in full.values())
    assert all(t.dtype == torch.float32 for t in full.values())
    for name, bits in (("tiny-cpu-int8", 8), ("tiny-cpu-int4", 4)):
        stored = linear_weights(Path(meta(served, name)["model_dir"]))
        qdata = [t for k, t in stored.items() if k.endswith("_weight_qdata")]
        assert sum(t.numel() for t in qdata) == params  # every Linear weight, one value each
        assert all(t.dtype == torch.int8 for t in qdata)
        lo, hi = min(int(t.min()) for t in qdata), max(int(t.max()) for t in qdata)
        assert (lo, hi) == ((-8, 7) if bits == 4 else (-128, 127))  # 4-bit values: torchao stores one per byte
        size = sum(t.numel() * t.element_size() for t in stored.values())
        assert size < 0.4 * params * 4  # the values in a byte, a scale and a zero point per 32: ~0.31 of fp32


def test_mcr_is_the_bits_ratio_times_the_measured_score_ratio(served):
    from pathlib import Path

    ppl = {name: perplexity_here(Path(meta(served, name)["model_dir"])) for name in PRESETS}
    for name, bits in (("tiny-cpu-int4", 4),):  # (int8 through compare below)
        res = run_effmon("report", name, "--format", "efficientllm", "--perf", f"ppl:{TEXT}", "--baseline",
                         "tiny-cpu", env_home=served, timeout=300)  # fmt: skip
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        # score = 1/perplexity: MCR = (32 / bits) x (ppl_fp32 / ppl_quantized)
        assert doc["MCR"] == pytest.approx((32 / bits) * ppl["tiny-cpu"] / ppl[name], rel=1e-6)
        assert f"this run {ppl[name]:.4g}, baseline {ppl['tiny-cpu']:.4g}" in res.stderr
    res = run_effmon("compare", *PRESETS, "--perf", f"ppl:{TEXT}", "--format", "json", env_home=served, timeout=300)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["runs"] == list(PRESETS)
    mcr = next(row for row in result["metrics"] if row["key"] == "MCR")
    expected = [(32 / bits) * ppl["tiny-cpu"] / ppl[name] for name, bits in PRESETS.items()]
    assert mcr["values"] == pytest.approx(expected, rel=1e-6)
    it = next(row for row in result["metrics"] if row["key"] == "IT")
    assert all(v is not None and v > 0 for v in it["values"])  # measured for all three


def test_a_measured_score_says_what_is_missing(served, tmp_path):
    for args, words in (
        (["report", "tiny-cpu-int4", "--perf", "ppl:nosuch.txt", "--baseline", "tiny-cpu"], "no such file"),
        (["report", "tiny-cpu-int4", "--perf", f"ppl:{TEXT}"], "give --baseline SESSION"),
        (["report", "tiny-cpu-int4", "--perf", "good"], "give a score (0.47) or ppl:FILE"),
    ):
        res = run_effmon(*args, env_home=served)
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
    # a session that served no model folder of its own
    run_effmon("record", "--name", "plain", "--", sys.executable, "-c", "pass", env_home=served)
    res = run_effmon("compare", "tiny-cpu", "plain", "--perf", f"ppl:{TEXT}", env_home=served)
    assert res.returncode == 2 and "does not say which model folder" in res.stderr, res.stderr
