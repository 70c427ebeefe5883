"""CPU and memory of the dashboard process, run in a real terminal (tmux).

    python benchmarks/bench_dashboard.py [--seconds 30]          # replay of 8 GPUs at 10 Hz (any machine)
    python benchmarks/bench_dashboard.py --vs-nvitop              # GPU machine: effmon top beside nvitop

Targets (issue 5): <= 5 % of one core with 8 GPUs at 10 Hz and the default 1 s refresh; memory steady
over a 1-hour replay at x60. With --vs-nvitop both monitors run at their defaults, one after the other,
in the same terminal size, and the CPU ratio is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.synth import make_session  # noqa: E402


def measure(cmd: str, seconds: float, size=(120, 40), env_extra: dict | None = None, warmup: float = 10.0) -> dict:
    """Start ``cmd`` in a detached tmux pane; after a warm-up, measure its CPU and RSS for ``seconds``."""
    name = f"bench-{os.getpid()}-{time.monotonic_ns()}"
    env = " ".join(f"{k}={v}" for k, v in (env_extra or {}).items())
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", name, "-x", str(size[0]), "-y", str(size[1]), f"{env} {cmd}"], check=True
    )
    try:
        pane_pid = int(
            subprocess.run(
                ["tmux", "list-panes", "-t", name, "-F", "#{pane_pid}"], capture_output=True, text=True
            ).stdout.split()[0]
        )
        time.sleep(warmup)  # start-up and the first frames are not steady state
        shell = psutil.Process(pane_pid)
        procs = [shell] + shell.children(recursive=True)
        target = max(procs, key=lambda p: p.memory_info().rss)
        c0 = target.cpu_times()
        rss = [target.memory_info().rss]
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(min(5.0, seconds))
            rss.append(target.memory_info().rss)
        c1 = target.cpu_times()
        wall = time.monotonic() - t0
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        return {
            "cpu_pct": cpu / wall * 100,
            "rss_start_mb": rss[0] / 1e6,
            "rss_end_mb": rss[-1] / 1e6,
            "rss_max_mb": max(rss) / 1e6,
        }
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--vs-nvitop", action="store_true")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    args = ap.parse_args()
    warmup, fast_s, gpus, hours = 10.0, 60.0, 8, 1.0
    if args.quick:
        args.seconds, warmup, fast_s, gpus, hours = 2, 2.0, 2.0, 2, 0.05
    if not shutil.which("tmux"):
        sys.exit("needs tmux (apt-get install tmux)")
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.vs_nvitop:
            env = {"EFFMON_HOME": tmp}
            e = measure(f"{py} -m effmon top", args.seconds, env_extra=env, warmup=warmup)
            n = measure(f"{py} -m nvitop", args.seconds, warmup=warmup)
            rows.append(("effmon top (NVML 10 Hz, refresh 1 s)", e))
            rows.append(("nvitop (default: 2 s)", n))
            print(f"CPU ratio effmon/nvitop: {e['cpu_pct'] / n['cpu_pct']:.2f}")
        else:
            session = make_session(Path(tmp) / "gpu8.effmon", gpus=gpus, seconds=3600 * hours)
            env = {"EFFMON_HOME": tmp}
            rows.append(
                (
                    "effmon replay, 8 GPUs x 10 Hz, x1, refresh 1 s",
                    measure(f"{py} -m effmon replay {session} --speed 1", args.seconds, env_extra=env, warmup=warmup),
                )
            )
            rows.append(
                (
                    "effmon replay, 8 GPUs x 10 Hz, x60 (1 h in 60 s), refresh 1 s",
                    measure(f"{py} -m effmon replay {session} --speed 60", fast_s, env_extra=env, warmup=warmup),
                )
            )
    print("| what | CPU (% of one core) | RSS start → end (max), MB |\n|---|---|---|")
    for name, m in rows:
        print(
            f"| {name} | {m['cpu_pct']:.2f} | {m['rss_start_mb']:.0f} → {m['rss_end_mb']:.0f} ({m['rss_max_mb']:.0f}) |"
        )


if __name__ == "__main__":
    main()
