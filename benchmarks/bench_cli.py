"""`effmon --help` wall time and `effmon record` CPU use while idle.

    python benchmarks/bench_cli.py [--seconds 30]

Targets (issue 3): --help <= 150 ms; record idle CPU <= 2 % of one core at 10 Hz.
Recording CPU is measured twice: a plain `effmon record -- sleep N` (NVML where present, host at 1 Hz)
and a replay of 8 GPUs at 10 Hz in real time (what a 8-GPU machine feeds the sampler and store).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def help_time(runs: int = 15) -> float:
    exe = shutil.which("effmon")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "effmon", "--help"]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def python_startup(runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_of(cmd: list[str], env: dict) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    args = ap.parse_args()
    if args.quick:
        args.seconds = 2
    rows = [
        ("python -c pass (interpreter start, for scale)", f"{python_startup() * 1000:.0f} ms", ""),
        ("effmon --help", f"{help_time() * 1000:.0f} ms", "<= 150 ms"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, EFFMON_HOME=tmp)
        cpu, wall = cpu_of(
            [sys.executable, "-m", "effmon", "record", "-q", "--rate", "10", "--", "sleep", str(args.seconds)], env
        )
        rows.append(
            (
                f"effmon record -- sleep {args.seconds:.0f} (this machine's sources, 10 Hz)",
                f"{cpu / wall * 100:.2f} % of a core",
                "<= 2 %",
            )
        )
        import effmon.sources.trace as tr
        from benchmarks.bench_sampler import replay_bench  # noqa: F401  (same synthetic shape)

        lines = [json.loads(x) for x in tr.bundled_trace_path().read_text().splitlines()]
        gpu = [x for x in lines if x["kind"] == "gpu"]
        synth = Path(tmp) / "gpu8.jsonl"
        with synth.open("w") as f:
            f.write(json.dumps(lines[0]) + "\n")
            for k in range(int(args.seconds * 10) + 1):
                rec = gpu[k % len(gpu)]
                for g in range(8):
                    f.write(json.dumps({**rec, "t": 1e9 + k * 0.1, "gpu": g}) + "\n")
        cpu, wall = cpu_of([sys.executable, "-m", "effmon", "record", "-q", "--replay", str(synth)], env)
        rows.append(
            ("effmon record --replay (8 GPUs at 10 Hz, real time)", f"{cpu / wall * 100:.2f} % of a core", "<= 2 %")
        )
    print("| measure | value | target |\n|---|---|---|")
    for r in rows:
        print(f"| {' | '.join(r)} |")


if __name__ == "__main__":
    main()
