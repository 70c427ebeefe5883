"""On a GPU machine: the benchmark's bf16-vs-int4 comparison from measured data (issue 20).

    python benchmarks/gpu_quant_compare.py [--model PATH] [--requests 200]

Serves one model folder two ways with `transformers serve` on the GPU under effmon, loads each with the same load,
then runs `effmon compare bf16 int4 --perf ppl:effmon/data/eval-text.txt`:

- bf16: the folder as it is;
- int4: the `transformers-int4-gpu` preset (Linear weights int4, torchao, per group of 32, written beside it).

(bitsandbytes 4-bit quantizes at load, inside the server: its weights are not in a folder effmon can score, so it
is not in this comparison.)

Without --model it builds a random 1.2B-parameter Llama-shaped model with the tiny model's tokenizer (no download)
so the script runs as is; with a real model (e.g. DeepSeek-R1-Distill-Qwen-14B) the figures sit beside the
benchmark's published row (bf16 → int4: AMU 51.83 → 34.21 GB, IT 24.74 → 26.40 tok/s, AEC 212 → 191 W, MCR 3.6965).
Needs effmon[serve,quant] (transformers serve's own dependencies) on the GPU machine; never changes a GPU setting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "effmon" / "data" / "eval-text.txt"


def random_model(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from effmon.recipes.tiny_model import ensure

    tiny = ensure(folder.with_name("tiny-tokenizer"))
    tok = AutoTokenizer.from_pretrained(tiny)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=5632, num_hidden_layers=20,
                         num_attention_heads=16, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def effmon(*args: str, env: dict[str, str]) -> int:
    print("$ effmon " + " ".join(args), file=sys.stderr)
    return subprocess.run([sys.executable, "-m", "effmon", *args], cwd=ROOT, env=env).returncode


def need_gpu() -> None:
    """A clear exit on a machine without an NVIDIA GPU (this script measures one), before anything starts."""
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception as exc:
        raise SystemExit(
            f"needs an NVIDIA GPU and driver (pynvml: {exc}); docs/benchmarks.md lists it as pending"
        ) from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a local model folder (default: a random 1.2B Llama built here)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    args = ap.parse_args()
    if args.quick:
        args.requests = 4
    need_gpu()
    home = Path(tempfile.mkdtemp(prefix="effmon-quant-"))
    env = {**os.environ, "EFFMON_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    model = Path(args.model) if args.model else random_model(home / "models" / "random-llama-1.2b")
    load = ["--load", "--requests", str(args.requests), "--concurrency", "8", "--output-tokens", "128"]
    runs = {"bf16": ["--set", "quantize=", "--set", "precision=bf16", "--set", "bits=16"], "int4": []}
    for name, extra in runs.items():
        code = effmon("serve", "transformers-int4-gpu", "--set", f"model={model}", *extra, *load, "--name", name,
                      env=env)  # fmt: skip
        if code:
            print(f"{name}: effmon serve exited {code}", file=sys.stderr)
    raise SystemExit(effmon("compare", *runs, "--perf", f"ppl:{TEXT}", env=env))


if __name__ == "__main__":
    main()
