"""The load generator's own ceiling on this machine, against a local server that streams instantly.

    python benchmarks/bench_load.py [--seconds 10]

For concurrency 1, 64 and 512: requests/s and streamed tokens/s sustained, and the added latency (TTFT and
E2E p99) with nothing to wait for on the server: what effmon load itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from effmon.serving.load import LoadConfig, run_load, summarize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    a = ap.parse_args()
    if a.quick:
        a.seconds, a.tokens = 1, 8
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_server", "--port", str(port), "--ttft", "0", "--itl", "0"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        print(
            "| concurrency | requests/s | streamed tokens/s | TTFT p99 (ms) | E2E p99 (ms) | failed |\n"
            "|---|---|---|---|---|---|"
        )
        for conc in (1, 64, 512):
            cfg = LoadConfig(url=url, concurrency=conc, requests=None, duration=a.seconds, output_tokens=a.tokens)
            results, wall = asyncio.run(run_load(cfg))
            s = summarize(results, wall, cfg).to_json()
            print(
                f"| {conc} | {s['request_throughput']:.0f} | {s['output_token_throughput']:.0f} | "
                f"{s['ttft_s']['p99'] * 1000:.1f} | {s['e2e_s']['p99'] * 1000:.1f} | {s['failed']} |"
            )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
