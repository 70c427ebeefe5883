"""Storage per GPU-hour at 10 Hz, and report generation time and memory for a 1-hour, 8-GPU session.

    python benchmarks/bench_storage_report.py [--gpus 8] [--seconds 3600]

Targets: storage <= 20 MB per GPU-hour; each report <= 500 MB; table, efficientllm, json and csv <= 1 s,
html <= 2 s (issue 11). The session is written the way the recorder writes: one transaction per 0.5 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.synth import make_session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    args = ap.parse_args()
    if args.quick:
        args.gpus, args.seconds = 2, 60
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synth.effmon"
        t0 = time.perf_counter()
        make_session(path, gpus=args.gpus, seconds=args.seconds)
        build_s = time.perf_counter() - t0
        size = path.stat().st_size
        gpu_hours = args.gpus * args.seconds / 3600
        rows = []
        for fmt in ("table", "efficientllm", "json", "csv", "html"):
            code = (
                "import sys, time, resource, io, contextlib\n"
                "from effmon.cli import main\n"
                "t = time.perf_counter()\n"
                f"rc = main(['report', sys.argv[1], '-f', '{fmt}', '-o', sys.argv[2]])\n"
                "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)\n"
            )
            out = subprocess.run(
                [sys.executable, "-c", code, str(path), str(Path(tmp) / f"out.{fmt}")],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            rows.append((fmt, float(out[0]), int(out[1]) / 1024, int(out[2])))
    print(f"session: {args.gpus} GPUs x {args.seconds:.0f} s at 10 Hz (built in {build_s:.1f} s)")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| session file | {size / 1e6:.1f} MB | |")
    print(f"| storage per GPU-hour | {size / 1e6 / gpu_hours:.2f} MB | <= 20 MB |")
    for fmt, secs, rss_mb, rc in rows:
        target = "<= 2 s" if fmt == "html" else "<= 1 s"
        print(f"| report --format {fmt} | {secs:.2f} s, peak RSS {rss_mb:.0f} MB (exit {rc}) | {target}, <= 500 MB |")


if __name__ == "__main__":
    main()
