"""Synthesise long multi-GPU sessions from the real H100 trace (for storage and report benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

from effmon.core.declare import CORE_ENTITIES, GPM_ACTIVITY, Row
from effmon.core.energy import EnergyIntegrator
from effmon.core.store import SessionWriter
from effmon.recording import FLUSH_EVERY_S
from effmon.sources.trace import bundled_trace_path

GPU_KEYS = ("mem_used_bytes", "mem_total_bytes", "util_gpu_pct", "util_mem_pct", "power_w", "sm_clock_mhz", "temp_c")
GPM_KEYS = GPM_ACTIVITY


def trace_gpu_rows() -> list[dict]:
    return [r for r in map(json.loads, bundled_trace_path().read_text().splitlines()) if r.get("kind") == "gpu"]


def make_session(path: Path, gpus: int = 8, seconds: float = 3600.0, hz: float = 10.0, t0: float = 1.8e9) -> Path:
    """A session shaped like a real recording: every-tick gauges, 1 Hz GPM and energy, training steps."""
    src = trace_gpu_rows()
    writer = SessionWriter(
        path,
        CORE_ENTITIES,
        {
            "name": path.stem,
            "status": "complete",
            "gpus": [
                {"index": i, "name": "NVIDIA H100 80GB HBM3", "mem_total_bytes": 85520809984, "power_limit_w": 700.0}
                for i in range(gpus)
            ],
            "model": {"params": 852559872},
        },
    )
    integ = EnergyIntegrator()
    energy = [2500.0] * gpus
    ticks = int(seconds * hz)
    batch: list[Row] = []
    step_t = t0
    step = 0
    for k in range(ticks):
        t = t0 + k / hz
        rec = src[k % len(src)]
        for g in range(gpus):
            batch.append(
                Row(
                    "gpu",
                    {
                        "t": t,
                        "gpu": g,
                        **{key: rec.get(key) for key in GPU_KEYS},
                        "power_limit_w": 700.0,
                        "clock_event_reasons": 0,
                    },
                )
            )
            energy[g] += rec["power_w"] / hz
        if k % int(hz) == 0:
            for g in range(gpus):
                batch.append(Row("gpu_gpm", {"t": t, "gpu": g, **{key: rec.get(key) for key in GPM_KEYS}}))
                batch.append(Row("gpu_energy", {"t": t, "gpu": g, "energy_counter_j": energy[g]}))
        while step_t + 0.135 <= t:
            batch.append(
                Row(
                    "train_step",
                    {
                        "t_start": step_t,
                        "t_end": step_t + 0.135,
                        "rank": 0,
                        "step": step,
                        "tokens": 8192,
                        "samples": 8,
                        "loss": 2.0,
                    },
                )
            )
            step_t += 0.135
            step += 1
        if (k + 1) % int(hz * FLUSH_EVERY_S) == 0:  # one transaction per flush, as the recorder writes
            integ.feed(batch)
            writer.write(batch)
            batch = []
    integ.feed(batch)
    writer.write(batch)
    writer.set_meta(started_at=t0, ended_at=t0 + seconds)
    writer.close()
    return path
