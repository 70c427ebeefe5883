"""The independent reference for exposed communication (tests/e2e/test_training_scale.py), under torchrun with gloo:
the same batches stepped with gradient synchronisation (recorded by effmon.track, the model watched with
``effmon.track.ddp``) and without it (``no_sync()``, not recorded). The step-time difference is the exposed cost.

    torchrun --nproc_per_node 2 ddp_comm.py OUT_DIR [--steps 40] [--width 2048]

Each rank writes ``OUT_DIR/comm-<rank>.json`` with its own step times of both kinds (perf_counter).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--width", type=int, default=2048)
    args = ap.parse_args()

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import effmon.track as et

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    # a wide layer and a tiny batch: little computation, a large gradient to synchronise
    model = DistributedDataParallel(torch.nn.Linear(args.width, args.width), gradient_as_bucket_view=True)
    et.ddp(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(2, args.width)

    def one() -> None:
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=False)

    for _ in range(3):  # warm-up, not recorded
        one()
    et.communication()  # the warm-up's synchronisation is not a recorded step's
    synced, local = [], []
    # interleaved, so a slow spell of the machine lands on both kinds alike
    for _ in range(args.steps):
        dist.barrier()
        t0 = time.perf_counter()
        with et.step(tokens=2, samples=2):
            one()
        synced.append(time.perf_counter() - t0)
        dist.barrier()
        t0 = time.perf_counter()
        with model.no_sync():
            one()
        local.append(time.perf_counter() - t0)
    et.flush()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"comm-{rank}.json").write_text(
        json.dumps(
            {
                "rank": rank,
                "synced": synced,
                "no_sync": local,
                "median_gap": statistics.median(synced) - statistics.median(local),
            }
        )
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
