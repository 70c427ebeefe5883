"""A light live view for ``effmon demo`` and recordings (the full dashboard is ``effmon.tui``)."""

from __future__ import annotations

import sys
import threading
from typing import Any

from effmon.core.fmt import human_energy, num


def _table(recorder: Any) -> Any:
    from rich.table import Table

    live = recorder.live
    gpus = live.of("gpu")
    gpm = {g["gpu"]: g for g in live.of("gpu_gpm")}
    energy = {e["gpu"]: e for e in live.of("gpu_energy")}
    steps = live.counts.get("train_step", 0)
    reqs = live.counts.get("request", 0)
    phases = live.of("phase")
    title = f"{recorder.path.name.removesuffix('.effmon')}  steps {steps}  request batches {reqs}"
    if phases:
        title += f"  last phase: {phases[-1].get('name')}"
    t = Table(title=title, title_justify="left")
    for col in ("GPU", "mem GB", "NVML util", "SM act.", "tensor", "power W", "energy", "SM MHz", "°C"):
        t.add_column(col, justify="right")
    for g in gpus:
        idx = g["gpu"]
        a = gpm.get(idx, {})
        e = energy.get(idx, {})
        used, total = g.get("mem_used_bytes"), g.get("mem_total_bytes")
        mem = f"{used / 1e9:.1f}/{total / 1e9:.0f}" if used is not None and total else "N/A"
        t.add_row(
            str(idx),
            mem,
            num(g.get("util_gpu_pct"), ".0f", "%"),
            num(a.get("sm_active_pct"), ".1f", "%"),
            num(a.get("tensor_active_pct"), ".1f", "%"),
            num(g.get("power_w"), ".0f"),
            human_energy(e.get("energy_integrated_j")),
            num(g.get("sm_clock_mhz"), ".0f"),
            num(g.get("temp_c"), ".0f"),
        )
    return t


def live_view(recorder: Any, done: threading.Event) -> None:
    from rich.live import Live

    with Live(_table(recorder), refresh_per_second=2, transient=False) as live:
        while not done.wait(0.5):
            live.update(_table(recorder))
        live.update(_table(recorder))


def progress_lines(recorder: Any, done: threading.Event) -> None:
    """Without a terminal: one status line every 5 s on stderr."""
    while not done.wait(5.0):
        gpus = recorder.live.of("gpu")
        power = sum(g.get("power_w") or 0 for g in gpus)
        print(f"effmon: {recorder.rows_written} rows written; {len(gpus)} GPU(s), {power:.0f} W now", file=sys.stderr)
