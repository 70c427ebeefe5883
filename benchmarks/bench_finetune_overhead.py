"""Overhead of `effmon run` on a real LoRA fine-tune (GPU machine).

    python benchmarks/bench_finetune_overhead.py [--rounds 3] [--steps 60]

A randomly initialised Llama-shaped model of about 0.85B parameters (bf16, batch 8 x 1024 tokens, LoRA r=16 on
q/k/v/o) is fine-tuned with the transformers Trainer, alternately bare (A) and under `effmon run --headless`
sampling at 10 Hz (B), A/B/A/B... Each run's median step time comes from the Trainer itself (a callback that
synchronises CUDA at step boundaries, the same in A and B), skipping 10 warm-up steps. Prints the per-round
figures, the median B/A ratio and the run-to-run spread of A. Target (issues 6, 15): slowdown <= 0.5 %, no host
sync added (issue 15: tokens are counted from the batches' shapes and a device-side sum read once per optimizer
step after a CUDA event, no gather). Without a GPU it runs a small model on the CPU through the same Trainer path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TRAIN = r"""
import json, sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments, TrainerCallback
from peft import LoraConfig, get_peft_model
steps, out = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
gpu = torch.cuda.is_available()
sync = torch.cuda.synchronize if gpu else (lambda: None)
if gpu:
    cfg = LlamaConfig(vocab_size=32000, hidden_size=1536, intermediate_size=6144, num_hidden_layers=24,
                      num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048)
    batch, seq = 8, 1024
else:  # no GPU: a small model on the CPU, the same Trainer path (a CPU step is no GPU step: see the docs)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048)
    batch, seq = 4, 256
if len(sys.argv) > 3:  # --quick: the smallest step, to check the script
    batch, seq = 1, 32
model = LlamaForCausalLM(cfg).to(torch.bfloat16 if gpu else torch.float32)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                         task_type="CAUSAL_LM"))
data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 32000, (steps * batch + batch, seq)).tolist()]
times = []
class Timer(TrainerCallback):
    def on_step_begin(self, *a, **k):
        sync(); self.t = time.perf_counter()
    def on_step_end(self, *a, **k):
        sync(); times.append(time.perf_counter() - self.t)
args = TrainingArguments(output_dir="/tmp/ovh", max_steps=steps, per_device_train_batch_size=batch, bf16=gpu,
                         use_cpu=not gpu, logging_steps=10, save_strategy="no", report_to=[], disable_tqdm=True)
Trainer(model=model, args=args, train_dataset=data, callbacks=[Timer()]).train()
json.dump(times, open(out, "w"))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.steps = 1, 4
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "train.py"
        script.write_text(TRAIN)
        env = dict(os.environ, EFFMON_HOME=tmp, HF_HUB_OFFLINE="1")
        for r in range(a.rounds):
            for label in ("A", "B"):
                out = Path(tmp) / f"{label}{r}.json"
                cmd = [sys.executable, str(script), str(a.steps), str(out), *(["small"] if a.quick else [])]
                if label == "B":
                    cmd = [sys.executable, "-m", "effmon", "run", "--headless", "--rate", "10", "--", *cmd]
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                times = json.loads(out.read_text())[min(10, a.steps // 2) :]  # the first steps warm up
                rows.append((r, label, statistics.median(times)))
    a_times = [m for _, label, m in rows if label == "A"]
    b_times = [m for _, label, m in rows if label == "B"]
    print("| round | A: bare median step (s) | B: under effmon run (s) | B/A |\n|---|---|---|---|")
    for r in range(a.rounds):
        ta = next(m for rr, label, m in rows if rr == r and label == "A")
        tb = next(m for rr, label, m in rows if rr == r and label == "B")
        print(f"| {r} | {ta:.4f} | {tb:.4f} | {tb / ta:.4f} |")
    ratio = statistics.median(b_times) / statistics.median(a_times)
    noise = (max(a_times) - min(a_times)) / statistics.median(a_times)
    print(
        f"\nmedian step-time ratio B/A: {ratio:.4f} ({(ratio - 1) * 100:+.2f} %); "
        f"run-to-run spread of A: {noise * 100:.2f} %"
    )


if __name__ == "__main__":
    main()
