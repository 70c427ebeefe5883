"""On a GPU machine: |integrated energy - counter delta| / counter delta over >= 60 s of real load.

    python benchmarks/gpu_energy_check.py [--seconds 70]

Runs a bf16 matmul loop (torch, CUDA) under `effmon record` at 10 Hz, then reads the session.
Target (issue 3): <= 0.5 %.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LOAD = """
import time, torch, sys
a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
"""


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
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=70)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    args = ap.parse_args()
    if args.quick:
        args.seconds = 5
    need_gpu()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, EFFMON_HOME=tmp)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "effmon",
                "record",
                "--name",
                "load",
                "--rate",
                "10",
                "--",
                sys.executable,
                "-c",
                LOAD,
                str(args.seconds),
            ],
            env=env,
            check=True,
        )
        from effmon.core.store import SessionReader

        with SessionReader(Path(tmp) / "sessions" / "load.effmon") as r:
            print("| GPU | seconds | counter delta J | integrated J | difference |\n|---|---|---|---|---|")
            for gpu in sorted({g for (g,) in r.rows("gpu_energy", ["gpu"])}):
                rows = r.dicts("gpu_energy", "gpu = ?", (gpu,))
                last = rows[-1]
                c, i = last["energy_counter_delta_j"], last["energy_integrated_j"]
                diff = abs(i - c) / c * 100 if c else float("nan")
                print(f"| {gpu} | {last['t'] - rows[0]['t']:.1f} | {c:.1f} | {i:.1f} | {diff:.3f} % |")


if __name__ == "__main__":
    main()
