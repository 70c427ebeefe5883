"""Fine-tune a causal LM with the transformers Trainer and PEFT (LoRA, RSLoRA, DoRA, PiSSA) or fully.

    python -m effmon.recipes.finetune --model tiny --method lora --steps 30

``--model tiny`` builds a small Llama-shaped model with random weights and trains a BPE tokenizer on
the spot, so it runs offline on a CPU in seconds; give a local path (or a hub id, when online) for real
runs. ``--dataset synthetic`` makes text; a path to a .txt or .jsonl file (a "text" field) uses it.
It writes ``trainer_log.json`` (the Trainer's log history and PEFT's parameter counts) to --output-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

WORDS = (
    "the model learns tokens from text while the gpu computes gradients and the optimizer updates "
    "weights energy memory power latency throughput adapter rank alpha layer attention"
).split()


def fail(message: str) -> None:
    print(f"effmon finetune: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) for _ in range(n)]


def tiny_tokenizer(texts: list[str]):  # noqa: ANN201
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=256, special_tokens=["<unk>", "<pad>", "<s>", "</s>"], show_progress=False),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def load_texts(dataset: str) -> list[str]:
    if dataset == "synthetic":
        return corpus(512)
    path = Path(dataset)
    if not path.exists():
        fail(f"dataset {dataset} does not exist; give a .txt or .jsonl file, or 'synthetic'")
    if path.suffix == ".jsonl":
        texts = [json.loads(line).get("text", "") for line in path.read_text().splitlines() if line.strip()]
    else:
        texts = [line for line in path.read_text().splitlines() if line.strip()]
    if not texts:
        fail(f"dataset {dataset} holds no text")
    return texts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny' (random weights), a local path, or a hub id")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--method", default="lora", choices=["lora", "rslora", "dora", "pissa", "full"])
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=int, default=16)
    ap.add_argument("--target-modules", default="q_proj,v_proj")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--output-dir", default="effmon-finetune-out")
    args = ap.parse_args(argv)

    if (
        args.model != "tiny"
        and (args.model.startswith((".", "/", "~")) or os.sep in args.model)
        and not Path(args.model).expanduser().exists()
    ):
        fail(f"model path {args.model} does not exist; give an existing directory, a hub id, or 'tiny'")
    from effmon.recipes.quiet import quiet_start, say_where

    notices = quiet_start(Path(args.output_dir) / "notices.log")
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
    )

    texts = load_texts(args.dataset)
    torch.manual_seed(0)
    model: Any
    if args.model == "tiny":
        from effmon.recipes.tiny_model import tiny_llama

        tokenizer = tiny_tokenizer(corpus(512))
        model = tiny_llama(tokenizer, max_positions=256)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(args.model)
            model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype="auto")
        except OSError as exc:
            fail(f"cannot load model {args.model}: {exc}")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    enc = tokenizer(texts, truncation=True, max_length=args.seq_len, padding="max_length")
    data = [
        {"input_ids": ids, "attention_mask": mask, "labels": [t if m else -100 for t, m in zip(ids, mask, strict=True)]}
        for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True)
    ]

    if args.method != "full":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=args.r,
            lora_alpha=args.alpha,
            target_modules=args.target_modules.split(","),
            task_type="CAUSAL_LM",
            use_rslora=args.method == "rslora",
            use_dora=args.method == "dora",
            init_lora_weights="pissa" if args.method == "pissa" else True,
        )
        model = get_peft_model(model, lora)

    cuda = torch.cuda.is_available()
    targs = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not cuda,
        bf16=cuda,
        dataloader_num_workers=0,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",  # the Trainer's own count, to check effmon's against
    )
    trainer = Trainer(model=model, args=targs, train_dataset=data)
    result: Any = trainer.train()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = {
        "log_history": trainer.state.log_history,
        "train_runtime": result.metrics.get("train_runtime"),
        "num_input_tokens_seen": trainer.state.num_input_tokens_seen,
        "max_steps": trainer.state.max_steps,  # the Trainer's plan, to check effmon's progress against
        "num_train_epochs": trainer.state.num_train_epochs,
        "method": args.method,
    }
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()  # PEFT's own count, to check effmon's against
        log.update(trainable_params=int(trainable), params=int(total))
    (out / "trainer_log.json").write_text(json.dumps(log, indent=1, default=str))
    say_where(notices, "effmon finetune")
    print(
        f"effmon finetune: {args.method} on {args.model}: {args.steps} steps, "
        f"final loss {trainer.state.log_history[-2].get('loss') if len(trainer.state.log_history) > 1 else 'n/a'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
