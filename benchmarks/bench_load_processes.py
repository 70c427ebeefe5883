"""Would several client processes lift effmon load's ceiling? Measured before it is offered (issue 16).

    python benchmarks/bench_load_processes.py [--repeats 2]

The same load is driven by one `effmon load` process, then split evenly over two processes started together
(what a `--workers 2` option would do at best: no coordination cost at all), against the injected-timing server
of bench_peers.py (a fresh one per run, so its record of what it served is the truth for that run):

- the ceiling: a server that streams at once, 256 streams, 2,048 requests: requests/s over the longest load;
- heavy timing: 200 ms to the first token, 20 ms a token, 32 tokens, 512 streams, 2,048 requests: TTFT p50/p99
  and E2E p99 as each process reports them (the worse of the two) beside the server's own clock.

Prints one row per run; runs alternate (1, 2, 1, 2 …) so a drift of the machine falls on both.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_peers import ROOT, Server, truth  # noqa: E402

CASES = {"ceiling": (0.0, 0.0, 256), "200 ms + 20 ms/token": (0.2, 0.02, 512)}
REQUESTS = 2048


def scale_down() -> None:
    """--quick: 8 streams, 32 requests a run."""
    global REQUESTS
    for case, (ttft, itl, _) in CASES.items():
        CASES[case] = (ttft, itl, 8)
    REQUESTS = 32


def run(case: str, processes: int, work: Path) -> dict[str, Any]:
    ttft, itl, streams = CASES[case]
    server = Server(ttft, itl, "1")
    try:
        env = dict(os.environ, EFFMON_HOME=str(work / "home"))
        outs = [work / f"{case[:4]}-{processes}-{i}-{time.time_ns()}.json" for i in range(processes)]
        procs = []
        for out in outs:
            cmd = [sys.executable, "-m", "effmon", "load", server.url, "--model", "m", "--concurrency",
                   str(streams // processes), "--requests", str(REQUESTS // processes), "--output-tokens", "32",
                   "--tokenizer", "none", "--json", str(out)]  # fmt: skip
            procs.append(
                subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            )
        for p in procs:
            _, err = p.communicate(timeout=300)
            if p.returncode != 0:
                raise SystemExit(f"effmon load failed: {err.strip().splitlines()[-1:]}")
        runs = [json.loads(out.read_text()) for out in outs]
        true = truth(server.stats())
    finally:
        server.stop()
    return {
        "case": case,
        "processes": processes,
        "ok": sum(r["succeeded"] for r in runs),
        "rps": sum(r["succeeded"] for r in runs) / max(r["wall_s"] for r in runs),
        "ttft_p50": max(r["ttft_s"]["p50"] for r in runs) * 1000,
        "ttft_p99": max(r["ttft_s"]["p99"] for r in runs) * 1000,
        "e2e_p99": max(r["e2e_s"]["p99"] for r in runs) * 1000,
        "saturated": sum(bool(r["client"]["saturated"]) for r in runs),
        "truth": true,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    a = ap.parse_args()
    if a.quick:
        a.repeats = 1
        scale_down()
    print(f"machine: {os.cpu_count()} cores; {REQUESTS} requests a run\n")
    print("| case | processes | requests/s | TTFT p50 (truth) ms | TTFT p99 (truth) ms | E2E p99 (truth) ms | "
          "saturated processes |\n|---|---|---|---|---|---|---|")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            for _ in range(a.repeats):
                for processes in (1, 2):
                    r = run(case, processes, Path(tmp))
                    t = r["truth"]
                    print(f"| {case} | {processes} | {r['rps']:.0f} | {r['ttft_p50']:.0f} ({t['ttft_p50']:.0f}) | "
                          f"{r['ttft_p99']:.0f} ({t['ttft_p99']:.0f}) | {r['e2e_p99']:.0f} ({t['e2e_p99']:.0f}) | "
                          f"{r['saturated']}/{processes} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
