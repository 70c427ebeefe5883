"""A hand-written Trainer + LoRA fine-tune that measures its own reference figures, for effmon to be checked
against (tests/e2e/test_training_scale.py). Runs alone, under torchrun (DDP, FSDP) and under ``effmon run``.

    python trainer_reference.py OUT_DIR [--fsdp] [--epochs 4] [--samples 98] [--eval-steps 5]

Variable-length samples padded to the longest in each batch, evaluation every few steps and a partial last
batch per epoch. Each rank writes ``OUT_DIR/reference-<rank>.json``: what its collator saw (samples, real
tokens, padded positions), its own step times (on_step_begin -> on_step_end), the Trainer's own state
(``include_num_input_tokens_seen="non_padding"``, set here, not by effmon) and the exact token arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--samples", type=int, default=98)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-steps", type=int, default=5)
    ap.add_argument("--fsdp", action="store_true")
    ap.add_argument("--deepspeed", type=int, default=0, help="a DeepSpeed ZeRO stage (1-3) instead of DDP")
    ap.add_argument(
        "--save-steps", type=int, default=0, help="save a checkpoint (and trainer_state.json) every N steps"
    )
    ap.add_argument("--log-sleep", type=float, default=0.0, help="sleep this long at each log (a slower job)")
    ap.add_argument("--token-count", default="non_padding", help="the Trainer's include_num_input_tokens_seen")
    ap.add_argument("--report-to", default="none", help="the Trainer's report_to (tensorboard: event files)")
    ap.add_argument("--collate-sleep", type=float, default=0.0, help="the collator sleeps this long per batch")
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from effmon.recipes.finetune import corpus, tiny_tokenizer
    from effmon.recipes.tiny_model import tiny_llama

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer(corpus(256))
    model = get_peft_model(
        tiny_llama(tokenizer, max_positions=128),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    rng = random.Random(1)
    lengths = [rng.randint(4, 48) for _ in range(args.samples)]
    data = [{"input_ids": [rng.randint(4, len(tokenizer) - 1) for _ in range(n)]} for n in lengths]
    evalset = data[:16]
    pad = DataCollatorWithPadding(tokenizer, padding="longest")
    seen = {"samples": 0, "real": 0, "padded": 0, "batches": 0}
    training = {"on": False}

    waited: dict = {"s": 0.0}  # the collator's own time between steps: the data wait effmon must find

    def collate(features: list[dict]) -> dict:
        t0 = time.perf_counter()
        if args.collate_sleep:
            time.sleep(args.collate_sleep)
        batch = pad(features)
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        if training["on"]:
            seen["samples"] += int(batch["input_ids"].shape[0])
            seen["real"] += int(batch["attention_mask"].sum())
            seen["padded"] += int(batch["input_ids"].numel())
            seen["batches"] += 1
        if clock.times and model.training:  # a training batch (an evaluation's are the eval phase's)
            waited["s"] += time.perf_counter() - t0
            waited.setdefault("at", []).append((t0, time.perf_counter()))
        return batch

    class Clock(TrainerCallback):
        """The reference step time: from the Trainer's step begin to its step end."""

        def __init__(self) -> None:
            self.t0 = 0.0
            self.times: list[float] = []

        def on_step_begin(self, *a, **k):  # noqa: ANN002, ANN003, ANN201
            training["on"] = True
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):  # noqa: ANN002, ANN003, ANN201
            self.times.append(time.perf_counter() - self.t0)

        def on_evaluate(self, *a, **k):  # noqa: ANN002, ANN003, ANN201
            training["on"] = True

        def on_train_begin(self, *a, **k):  # noqa: ANN002, ANN003, ANN201
            training["on"] = True

        def on_log(self, *a, **k):  # noqa: ANN002, ANN003, ANN201
            time.sleep(args.log_sleep)

    clock = Clock()
    extra = {}
    if args.fsdp:
        extra = {"fsdp": True, "fsdp_config": {"version": 2, "reshard_after_forward": True}}
    if args.deepspeed:
        import deepspeed.ops

        # DeepSpeed compiles its shared-memory all-reduce (used by inference_all_reduce only) with g++ when the
        # CPU accelerator starts: two minutes of a 2-core CI per run. ZeRO's own collectives go through
        # torch.distributed (gloo) either way, so the op is marked unavailable and never built.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        extra = {
            "deepspeed": {
                "zero_optimization": {"stage": args.deepspeed},
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": "auto",
                "train_batch_size": "auto",
            }
        }
    targs = TrainingArguments(
        output_dir=os.path.join(args.out, "trainer"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        report_to=[] if args.report_to == "none" else [args.report_to],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        include_num_input_tokens_seen=args.token_count,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        **extra,
    )

    class Counting(Trainer):
        def evaluate(self, *a, **k):  # noqa: ANN002, ANN003, ANN201
            before = training["on"]
            training["on"] = False  # evaluation batches are not training batches
            try:
                return super().evaluate(*a, **k)
            finally:
                training["on"] = before

    trainer = Counting(
        model=model, args=targs, train_dataset=data, eval_dataset=evalset, data_collator=collate, callbacks=[clock]
    )
    result = trainer.train()
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    trainable, total = model.get_nb_trainable_parameters()
    doc = {
        "rank": rank,
        "world_size": world,
        "collator": seen,
        "step_times": clock.times,
        "global_step": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "collate_s_after_first_step": waited["s"],
        "collate_at": waited.get("at", []),
        "num_input_tokens_seen": trainer.state.num_input_tokens_seen,
        "train_runtime": result.metrics.get("train_runtime"),
        "log_history": trainer.state.log_history,
        "exact_real_tokens": args.epochs * sum(lengths),
        "exact_samples": args.epochs * len(lengths),
        "wrapper": type(trainer.model_wrapped).__name__,
        "fsdp_managed": any("FSDP" in type(m).__name__ for m in trainer.model_wrapped.modules()),
        "params": int(total),
        "trainable_params": int(trainable),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"reference-{rank}.json").write_text(json.dumps(doc, default=str))


if __name__ == "__main__":
    main()
