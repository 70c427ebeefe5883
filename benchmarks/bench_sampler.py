"""Sampler cost per tick per GPU.

    python benchmarks/bench_sampler.py                 # replay source, 8 GPUs (any machine)
    python benchmarks/bench_sampler.py --nvml          # real NVML on this machine's GPUs (GPU machine)

With --nvml it also times a naive loop that reads the energy counter (and process utilisation)
on every tick, the peer the issue compares against. Target: <= 50 us per GPU per tick for the
every-tick set; the naive loop costs ~4-6 ms per tick on an H100 (traces README).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from effmon.core.clock import VirtualClock  # noqa: E402
from effmon.core.sampler import Sampler  # noqa: E402
from effmon.plugins import SourceOptions  # noqa: E402
from effmon.recording import LiveState  # noqa: E402


def time_ticks(source, ticks: int, tick_s: float, start: float, sink=None) -> list[float]:
    """Wall time of each sampler tick (all due channels, sink included), in seconds."""
    clock = VirtualClock(start)
    sampler = Sampler([source], sink or (lambda rows: None), clock=clock)
    costs = []
    for k in range(ticks):
        now = start + k * tick_s
        t0 = time.perf_counter()
        sampler.tick(now)
        costs.append(time.perf_counter() - t0)
    return costs


def replay_bench(gpus: int, ticks: int) -> list[tuple[str, float, float]]:
    import json
    import tempfile

    from effmon.core.energy import EnergyIntegrator
    from effmon.sources.replay import ReplaySource
    from effmon.sources.trace import bundled_trace_path, load_trace

    lines = [json.loads(x) for x in bundled_trace_path().read_text().splitlines()]
    meta = lines[0]
    base = [x for x in lines if x["kind"] == "gpu"]
    folder = tempfile.mkdtemp(prefix="bench-sampler-")
    path = Path(folder) / f"gpu{gpus}.jsonl"
    with path.open("w") as f:  # the bundled H100 readings, as many GPUs, as a trace file: what a replay reads
        f.write(json.dumps(meta) + "\n")
        for k in range(ticks):
            rec = base[k % len(base)]
            for g in range(gpus):
                f.write(json.dumps({**rec, "t": 1e9 + k * 0.1, "gpu": g}) + "\n")
    trace = load_trace(path)
    live, integ = LiveState(), EnergyIntegrator()
    keys = {"gpu": ("gpu",), "gpu_gpm": ("gpu",), "gpu_energy": ("gpu",)}
    pending = []

    def sink(r):  # what the recorder does on the sampler thread
        integ.feed(r)
        pending.extend(r)
        live.update(r, keys)

    src = ReplaySource(SourceOptions(tick_s=0.1, slow_s=1.0), trace)
    src.open()
    costs = time_ticks(src, ticks, 0.1, 1e9, sink)
    src.close()
    path.unlink()
    Path(folder).rmdir()
    return [
        (
            "replay source + recorder sink, every tick",
            statistics.median(costs) / gpus * 1e6,
            statistics.quantiles(costs, n=100)[98] / gpus * 1e6,
        )
    ]


def nvml_bench(ticks: int) -> list[tuple[str, float, float]]:
    import pynvml as nv

    from effmon.sources.nvml import NvmlSource

    src = NvmlSource(SourceOptions(tick_s=0.1, slow_s=1.0))
    src.open()
    n = len(src.gpus)
    out = []
    fast = [0.0] * ticks
    for k in range(ticks):
        t0 = time.perf_counter()
        src.read("fast", time.time())
        fast[k] = time.perf_counter() - t0
    out.append(
        (
            "effmon every-tick set (NVML)",
            statistics.median(fast) / n * 1e6,
            statistics.quantiles(fast, n=100)[98] / n * 1e6,
        )
    )
    mixed = time_ticks(src, ticks, 0.1, time.time())
    out.append(
        (
            "effmon sampler tick, all channels amortised (NVML)",
            statistics.mean(mixed) / n * 1e6,
            statistics.quantiles(mixed, n=100)[98] / n * 1e6,
        )
    )
    naive = []
    handles = [g.handle for g in src.gpus]
    for _ in range(min(ticks, 300)):
        t0 = time.perf_counter()
        for h in handles:
            nv.nvmlDeviceGetMemoryInfo(h)
            nv.nvmlDeviceGetUtilizationRates(h)
            nv.nvmlDeviceGetPowerUsage(h)
            nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)
            nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
            nv.nvmlDeviceGetTotalEnergyConsumption(h)
            try:
                nv.nvmlDeviceGetProcessUtilization(h, 0)
            except nv.NVMLError:
                pass
        naive.append(time.perf_counter() - t0)
    out.append(
        (
            "naive loop: energy counter + process util every tick",
            statistics.median(naive) / n * 1e6,
            statistics.quantiles(naive, n=100)[98] / n * 1e6,
        )
    )
    src.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--ticks", type=int, default=3000)
    ap.add_argument("--nvml", action="store_true", help="measure real NVML (needs an NVIDIA GPU)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    args = ap.parse_args()
    if args.quick:
        args.gpus, args.ticks = 2, 100
    rows = nvml_bench(args.ticks) if args.nvml else replay_bench(args.gpus, args.ticks)
    print("| what | median us per GPU per tick | p99 us per GPU per tick |\n|---|---|---|")
    for name, med, p99 in rows:
        print(f"| {name} | {med:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    main()
