"""A plain FSDP2 (``fully_shard``) training loop on the CPU with gloo, reporting through effmon.track, that
writes its own reference figures (tests/e2e/test_training_scale.py). The Trainer falls back to DDP on the CPU, so
FSDP is driven directly here.

    torchrun --nproc_per_node 2 fsdp_loop.py OUT_DIR [--steps 24]

Each rank draws its own variable-length batches (padded to the longest) and reports its own real tokens,
padded positions and samples; it writes ``OUT_DIR/fsdp-<rank>.json`` with those sums, the model's wrapper
and its own step times.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=24)
    args = ap.parse_args()

    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    import effmon.track as et

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Embedding(512, 64), torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 512)
    )
    for layer in (model[1], model[3]):
        fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = random.Random(rank)
    sums = {"real": 0, "padded": 0, "samples": 0}
    times = []
    for _ in range(args.steps):
        lengths = [rng.randint(4, 40) for _ in range(rng.randint(2, 6))]
        width = max(lengths)
        ids = torch.randint(1, 512, (len(lengths), width))
        mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
        real, padded = int(mask.sum()), ids.numel()
        sums["real"] += real
        sums["padded"] += padded
        sums["samples"] += len(lengths)
        t0 = time.perf_counter()
        with et.step(tokens=real, samples=len(lengths), padded_tokens=padded):
            logits = model(ids * mask)
            loss = torch.nn.functional.cross_entropy(logits.view(-1, 512), (ids * mask).view(-1), ignore_index=0)
            loss.backward()
            opt.step()
            opt.zero_grad()
        times.append(time.perf_counter() - t0)
        et.log(loss=loss.item())
    et.flush()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"fsdp-{rank}.json").write_text(
        json.dumps({"rank": rank, **sums, "steps": args.steps, "step_times": times, "wrapper": type(model).__name__})
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
