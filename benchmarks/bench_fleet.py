"""The fleet view on 64 hosts x 8 GPUs (issue 17): refresh time and CPU, against a real Prometheus.

    python benchmarks/bench_fleet.py [--hosts 64] [--gpus 8] [--minutes 30] [--refreshes 10]

Synthetic dcgm-exporter series (every field the fleet view reads, 14 per GPU, one sample every 15 s, power and
utilisation following a training-like step pattern) for 64 hosts x 8 GPUs over the last 30 minutes are written as
OpenMetrics and loaded into a fresh TSDB with Prometheus' own ``promtool tsdb create-blocks-from openmetrics``;
Debian's ``prometheus`` then serves it on 127.0.0.1. Per refresh of ``effmon.report.fleet.fleet_snapshot`` (what
the fleet view runs each refresh, on its worker thread) over a 5 min and a 30 min window: wall time, this process's
CPU, and the Prometheus server's CPU (psutil), and the CPU share at the view's 5 s refresh. Then the drawing: one
``FleetApp.apply`` of the 64-host answer in a headless Textual app.

Beside it, in the same run, the baseline a Grafana board makes: range queries of the same fields at the board's
step (window / 300 points, Grafana's default max data points is about the panel width), pulled and parsed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCRAPE_S = 15


def fields() -> dict[str, tuple[float, float]]:
    """Each field the fleet view reads, with a base value and the swing a training step gives it."""
    return {
        "DCGM_FI_DEV_POWER_USAGE": (400.0, 280.0),
        "DCGM_FI_DEV_POWER_MGMT_LIMIT": (700.0, 0.0),
        "DCGM_FI_DEV_FB_USED": (52_000.0, 8_000.0),
        "DCGM_FI_DEV_FB_FREE": (29_000.0, -8_000.0),
        "DCGM_FI_DEV_GPU_UTIL": (80.0, 19.0),
        "DCGM_FI_DEV_MEM_COPY_UTIL": (40.0, 20.0),
        "DCGM_FI_DEV_SM_CLOCK": (1755.0, 225.0),
        "DCGM_FI_DEV_MEM_CLOCK": (2619.0, 0.0),
        "DCGM_FI_DEV_GPU_TEMP": (55.0, 10.0),
        "DCGM_FI_PROF_SM_ACTIVE": (0.6, 0.3),
        "DCGM_FI_PROF_SM_OCCUPANCY": (0.3, 0.1),
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": (0.25, 0.2),
        "DCGM_FI_PROF_DRAM_ACTIVE": (0.4, 0.2),
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": (0.0, 0.0),  # a counter: integrated below
    }


def write_openmetrics(path: Path, hosts: int, gpus: int, start: int, end: int) -> int:
    lines = 0
    with path.open("w") as out:
        for name, (base, swing) in fields().items():
            out.write(f"# TYPE {name} gauge\n")
            for h in range(hosts):
                for g in range(gpus):
                    labels = (f'gpu="{g}",UUID="GPU-{h:04d}{g:04d}",Hostname="node{h:02d}",'
                              f'modelName="NVIDIA H100 80GB HBM3",instance="node{h:02d}:9400",job="dcgm"')  # fmt: skip
                    energy = 1e12 + h * 1e9
                    for t in range(start, end, SCRAPE_S):
                        phase = math.sin(t / 7.0 + h + g / 3)
                        value = base + swing * phase
                        if name == "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION":
                            energy += (400.0 + 280.0 * phase) * SCRAPE_S * 1e3  # mJ
                            value = energy
                        out.write(f"{name}{{{labels}}} {value:.6g} {t}\n")
                        lines += 1
        out.write("# EOF\n")
    return lines


def baseline(url: str, start: float, end: float) -> int:
    """What a Grafana board of the same fields pulls: a range query per field, parsed."""
    from effmon.report.fleet import LATEST
    from effmon.report.fromprom import query_range

    points = 0
    for f in LATEST:
        for series in query_range(url, f, start, end, (end - start) / 300):
            points += len(series["values"])
    return points


def measure(fn, server_pid: int, n: int) -> dict[str, float]:
    import psutil

    server = psutil.Process(server_pid)
    walls, cpus, server_cpus = [], [], []
    for _ in range(n):
        s0 = server.cpu_times()
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        s1 = server.cpu_times()
        server_cpus.append((s1.user + s1.system) - (s0.user + s0.system))
    return {
        "wall_ms": statistics.median(walls) * 1e3,
        "wall_max_ms": max(walls) * 1e3,
        "cpu_ms": statistics.median(cpus) * 1e3,
        "server_cpu_ms": statistics.median(server_cpus) * 1e3,
    }


def draw_cost(url: str, fleet) -> float:
    from effmon.tui.fleet import FleetApp

    async def go() -> float:
        app = FleetApp(url, fixed=(fleet.start, fleet.end), first=fleet)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                app.apply(fleet)
                await pilot.pause()
                times.append(time.perf_counter() - t0)
            return statistics.median(times)

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=64)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--refreshes", type=int, default=10)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    args = ap.parse_args()
    if args.quick:
        args.hosts, args.gpus, args.minutes, args.refreshes = 2, 2, 2, 2
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        raise SystemExit("needs Debian's prometheus package (prometheus and promtool): apt-get install prometheus")
    from effmon.report.fleet import fleet_snapshot
    from tests.conftest import free_port

    with tempfile.TemporaryDirectory() as tmp:
        end = int(time.time()) // SCRAPE_S * SCRAPE_S - 60
        start = end - args.minutes * 60
        t0 = time.perf_counter()
        text = Path(tmp) / "fleet.om"
        lines = write_openmetrics(text, args.hosts, args.gpus, start, end + SCRAPE_S)
        tsdb = Path(tmp) / "tsdb"
        subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(text), str(tsdb)], check=True)
        text.unlink()
        print(f"loaded {lines:,} samples ({args.hosts} hosts x {args.gpus} GPUs x {len(fields())} fields, every "
              f"{SCRAPE_S} s for {args.minutes} min) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)  # fmt: skip
        port = free_port()
        config = Path(tmp) / "prometheus.yml"
        config.write_text("global: {scrape_interval: 15s}\nscrape_configs: []\n")
        server = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
                                   f"--web.listen-address=127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"{url}/-/ready", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            rows = []
            for window in (300, args.minutes * 60):
                a, b = end - window, end
                fleet = fleet_snapshot(url, "", a, b)
                assert fleet.gpus == args.hosts * args.gpus, (fleet.gpus, "series missing from the TSDB")
                m = measure(lambda a=a, b=b: fleet_snapshot(url, "", a, b), server.pid, args.refreshes)
                rows.append((f"fleet view, {window // 60} min window ({fleet.queries} queries)", m))
                points = baseline(url, a, b)
                mb = measure(lambda a=a, b=b: baseline(url, a, b), server.pid, max(3, args.refreshes // 3))
                rows.append((f"baseline: Grafana-style range pull ({points:,} points)", mb))
            draw = draw_cost(url, fleet)
        finally:
            server.terminate()
            server.wait(20)
    print(f"\nfleet of {args.hosts} hosts x {args.gpus} GPUs = {args.hosts * args.gpus} GPUs; median of "
          f"{args.refreshes} refreshes; CPU share at the fleet view's 5 s refresh\n")  # fmt: skip
    print(f"| {'what':<58} | wall ms | max ms | effmon CPU ms | share @5 s | Prometheus CPU ms |")
    print(f"|{'-' * 60}|--------:|-------:|--------------:|-----------:|------------------:|")
    for label, m in rows:
        print(f"| {label:<58} | {m['wall_ms']:7.0f} | {m['wall_max_ms']:6.0f} | {m['cpu_ms']:13.0f} | "
              f"{m['cpu_ms'] / 5000 * 100:9.1f}% | {m['server_cpu_ms']:17.0f} |")  # fmt: skip
    print(f"\ndrawing the 64-host table and strip (FleetApp.apply, headless): {draw * 1e3:.0f} ms")
    print(json.dumps({label: m for label, m in rows}), file=sys.stderr)


if __name__ == "__main__":
    main()
