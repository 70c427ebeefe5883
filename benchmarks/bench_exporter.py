"""What a Prometheus scrape of effmon's exporter costs (issue 17).

    python benchmarks/bench_exporter.py [--scrapes 200] [--gpus 8] [--hours 1]

A session shaped like a real recording (synth.py: 8 GPUs at 10 Hz for an hour, steps and GPM at 1 Hz) is served
by `effmon export` in its own process; this script scrapes it over HTTP and measures, per scrape, the wall time
seen by the scraper and the exporter process's CPU (from /proc through psutil), and the CPU share that makes at a
15 s scrape interval (Prometheus' default) and at 1 s. The first scrape (which reads the session's step and
request history once) is reported apart. Beside it, the same scrapes against prometheus_client's own process
collector on a bare endpoint (the least any Python exporter can cost).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.synth import make_session  # noqa: E402

BARE = (
    "import sys, time\n"
    "from prometheus_client import start_http_server\n"
    "server, _ = start_http_server(0, addr='127.0.0.1')\n"
    "print(f'http://127.0.0.1:{server.server_address[1]}/metrics', file=sys.stderr, flush=True)\n"
    "time.sleep(3600)\n"
)


def serve(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    while True:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"{cmd[:4]} ended before serving")
        if m := re.search(r"(http://\S+/metrics)", line):
            return proc, m.group(1)


def measure(url: str, pid: int, scrapes: int) -> dict[str, float]:
    import psutil

    proc = psutil.Process(pid)
    first_wall = time.perf_counter()
    cpu0 = sum(proc.cpu_times()[:2])
    size = len(urllib.request.urlopen(url, timeout=30).read())
    first = {"wall": time.perf_counter() - first_wall, "cpu": sum(proc.cpu_times()[:2]) - cpu0}
    walls, cpus = [], []
    for _ in range(scrapes):
        c0, w0 = sum(proc.cpu_times()[:2]), time.perf_counter()
        urllib.request.urlopen(url, timeout=30).read()
        walls.append(time.perf_counter() - w0)
        cpus.append(sum(proc.cpu_times()[:2]) - c0)
    cpu = sum(cpus) / scrapes  # /proc counts in clock ticks (10 ms): the mean over many scrapes, not a median
    return {"first_wall": first["wall"], "first_cpu": first["cpu"], "wall_p50": statistics.median(walls),
            "wall_p99": sorted(walls)[int(0.99 * (len(walls) - 1))], "cpu": cpu, "bytes": size}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    a = ap.parse_args()
    if a.quick:
        a.scrapes, a.gpus, a.hours = 5, 2, 0.02
    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(Path(tmp) / "long.effmon", gpus=a.gpus, seconds=a.hours * 3600)
        env = dict(os.environ, EFFMON_HOME=str(Path(tmp) / "home"))
        rows = []
        for name, cmd in (
            ("effmon export", [sys.executable, "-m", "effmon", "export", str(session), "--prometheus", "0"]),
            ("prometheus_client, process collector only", [sys.executable, "-c", BARE]),
        ):
            proc, url = serve(cmd, env)
            try:
                rows.append((name, measure(url, proc.pid, a.scrapes)))
            finally:
                proc.terminate()
                proc.wait(10)
    print(f"machine: {os.cpu_count()} cores; session: {a.gpus} GPUs x {a.hours:g} h at 10 Hz; {a.scrapes} scrapes\n")
    print("| endpoint | first scrape ms (CPU ms) | scrape p50 / p99 ms | CPU ms per scrape | CPU share at 15 s / 1 s "
          "| bytes |\n|---|---|---|---|---|---|")  # fmt: skip
    for name, m in rows:
        print(f"| {name} | {m['first_wall'] * 1e3:.1f} ({m['first_cpu'] * 1e3:.0f}) | {m['wall_p50'] * 1e3:.2f} / "
              f"{m['wall_p99'] * 1e3:.2f} | {m['cpu'] * 1e3:.2f} | {m['cpu'] / 15:.4%} / {m['cpu']:.3%} | "
              f"{m['bytes']:,} |")  # fmt: skip


if __name__ == "__main__":
    main()
