"""Cost of effmon.track inside the watched process, per step.

    python benchmarks/bench_track.py [--steps 200000]

Times `with et.step(...)` plus `et.log(loss=...)` in a tight loop (the writer thread running), against the
same loop without them. Issue 6 asks that the in-process part never slows the watched process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    args = ap.parse_args()
    n = 2000 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EFFMON_TRACK_DIR"] = tmp
        import effmon.track as et

        t0 = time.perf_counter()
        for _ in range(n):
            pass
        bare = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(n):
            with et.step(tokens=8192, samples=8):
                pass
            et.log(loss=1.0)
        tracked = time.perf_counter() - t0
        et.flush()
        lines = sum(1 for _ in open(et.track_path(os.getpid())))
        tight_dropped = et.dropped()

        def work() -> None:  # ~1 ms of Python work standing for a (very short) real training step
            end = time.perf_counter() + 0.001
            while time.perf_counter() < end:
                pass

        m = 3000
        t0 = time.perf_counter()
        for _ in range(m):
            work()
        plain = time.perf_counter() - t0
        before = et.dropped()
        t0 = time.perf_counter()
        for _ in range(m):
            with et.step(tokens=8192, samples=8):
                work()
            et.log(loss=1.0)
        real = time.perf_counter() - t0
        real_dropped = et.dropped() - before
    print("| what | µs per step |\n|---|---|")
    print(f"| empty loop | {bare / n * 1e6:.2f} |")
    print(f"| et.step + et.log, tight loop ({tight_dropped} of {2 * n} events dropped) | {tracked / n * 1e6:.2f} |")
    print(f"| 1 ms step, bare | {plain / m * 1e6:.1f} |")
    print(
        f"| 1 ms step with et.step + et.log ({real_dropped} dropped) | {real / m * 1e6:.1f} "
        f"({(real / plain - 1) * 100:+.2f} %) |"
    )
    print(f"\n{lines} lines written in the tight loop: it outruns the writer, so the buffer ({et.BUFFER}) drops")


if __name__ == "__main__":
    main()
