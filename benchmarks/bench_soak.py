"""Soak: a 2-hour, 8-GPU trace replayed at full speed, with the recorder's peak memory (issue 14).

    python benchmarks/bench_soak.py [--gpus 8] [--hours 2]

The trace is the bundled real H100 session tiled in time and across GPUs (10 Hz readings). Target: the
recorder's peak RSS under 200 MB. The peer in the same run is the naive way of reading a trace, every line
parsed into a dict and kept (what effmon did before it streamed), measured the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "effmon" / "data" / "h100_phases.jsonl"


def make_trace(path: Path, gpus: int, hours: float) -> int:
    """Tile the bundled trace's readings over ``hours`` and ``gpus``; returns the number of readings."""
    lines = [json.loads(x) for x in BUNDLED.read_text().splitlines() if x.strip()]
    meta = next(x for x in lines if x["kind"] == "meta")
    readings = [x for x in lines if x["kind"] == "gpu"]
    t0, span = readings[0]["t"], readings[-1]["t"] - readings[0]["t"] + 0.1
    tiles = int(hours * 3600 / span) + 1
    n = 0
    with open(path, "w") as f:
        f.write(json.dumps({**meta, "gpu_count": gpus}) + "\n")
        for tile in range(tiles):
            for r in readings:
                t = r["t"] + tile * span
                if t - t0 > hours * 3600:
                    break
                for g in range(gpus):
                    energy = r.get("energy_j")
                    row = {**r, "t": round(t + g * 1e-4, 4), "gpu": g}
                    if energy is not None:
                        row["energy_j"] = energy + tile * 100_000.0
                    f.write(json.dumps(row) + "\n")
                    n += 1
    return n


def peak_rss(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(peak RSS in MB of the process and its children, wall seconds, exit status), sampled every 0.1 s."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = watched.memory_info().rss + sum(c.memory_info().rss for c in watched.children(recursive=True))
            peak = max(peak, rss)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.1)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode:
        print(err[-2000:], file=sys.stderr)
    return peak / 2**20, time.perf_counter() - start, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    args = ap.parse_args()
    if args.quick:
        args.gpus, args.hours = 2, 0.01
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "soak.jsonl"
        n = make_trace(trace, args.gpus, args.hours)
        env = dict(os.environ, EFFMON_HOME=str(Path(tmp) / "home"))
        rss, wall, code = peak_rss(
            [sys.executable, "-m", "effmon", "record", "--replay", str(trace), "--as-fast-as-possible", "-q",
             "--name", "soak"],
            env,
        )  # fmt: skip
        session = Path(tmp) / "home" / "sessions" / "soak.effmon"
        naive, naive_wall, _ = peak_rss(
            [sys.executable, "-c", "import json, sys; rows = [json.loads(x) for x in open(sys.argv[1])]", str(trace)],
            env,
        )
        print(f"trace: {args.gpus} GPUs x {args.hours:g} h at 10 Hz = {n:,} readings, "
              f"{trace.stat().st_size / 2**20:.0f} MiB")  # fmt: skip
        print("\n| what | peak RSS (MB) | wall (s) | |\n|---|---|---|---|")
        print(f"| effmon record --replay --as-fast-as-possible | {rss:.0f} | {wall:.1f} | exit {code}, "
              f"{n / wall:,.0f} readings/s, session {session.stat().st_size / 2**20:.0f} MiB |")  # fmt: skip
        print(f"| peer: the trace read into dicts (the way effmon read it before) | {naive:.0f} | {naive_wall:.1f} | |")
        print(f"\ntarget: effmon under 200 MB: {'met' if rss < 200 else 'NOT met'}")


if __name__ == "__main__":
    main()
