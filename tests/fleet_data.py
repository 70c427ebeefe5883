"""A fleet built from the bundled H100 trace, as the fleet view's Prometheus queries would have answered: for the
fleet view's SVG snapshots and scripts/screenshots.py (a rendering fixture; tests/e2e/test_fleet.py checks the figures
against a real Prometheus)."""

import json
import statistics
from pathlib import Path

from effmon.report.fleet import Fleet, assemble

TRACE = Path(__file__).resolve().parent.parent / "effmon" / "data" / "h100_phases.jsonl"


def trace_fleet() -> Fleet:
    """Three hosts of two H100s each, their readings the bundled trace's at six stretches of it, as the fleet
    view's queries would have answered (the answers' shape is Prometheus' ``data.result``)."""
    rows = [d for d in map(json.loads, TRACE.read_text().splitlines()) if d["kind"] == "gpu"]
    mib = 2**20
    fields = {
        "DCGM_FI_DEV_POWER_USAGE": lambda r: r["power_w"],
        "DCGM_FI_DEV_FB_USED": lambda r: r["mem_used_bytes"] / mib,
        "DCGM_FI_DEV_FB_FREE": lambda r: (r["mem_total_bytes"] - r["mem_used_bytes"]) / mib,
        "DCGM_FI_DEV_GPU_UTIL": lambda r: r["util_gpu_pct"],
        "DCGM_FI_PROF_SM_ACTIVE": lambda r: r["sm_active_pct"] / 100,
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": lambda r: r["tensor_active_pct"] / 100,
        "DCGM_FI_DEV_GPU_TEMP": lambda r: r["temp_c"],
        "DCGM_FI_DEV_SM_CLOCK": lambda r: r["sm_clock_mhz"],
        "DCGM_FI_DEV_POWER_MGMT_LIMIT": lambda r: 700.0,
    }
    answers = {k: [] for k in ("latest", "count", "energy", "spark:power", "spark:mem")}
    answers |= {f"avg:{f}": [] for f in list(fields)[:6]}
    start, end = 1795419600.0, 1795419900.0
    for n in range(6):
        host, gpu = f"node{n // 2 + 1:02d}", str(n % 2)
        part = rows[100 + n * 60 : 400 + n * 60]
        labels = {"gpu": gpu, "Hostname": host, "instance": f"10.0.0.{n // 2 + 1}:9400", "job": "train",
                  "modelName": "NVIDIA H100 80GB HBM3", "UUID": f"GPU-{n}"}  # fmt: skip
        for f, get in fields.items():
            answers["latest"].append({"metric": {"__name__": f, **labels}, "value": [end, str(get(part[-1]))]})
            if f"avg:{f}" in answers:
                answers[f"avg:{f}"].append({"metric": labels, "value": [end, str(statistics.fmean(map(get, part)))]})
        answers["count"].append({"metric": labels, "value": [end, str(len(part))]})
        answers["energy"].append(
            {"metric": labels, "value": [end, str((part[-1]["energy_j"] - part[0]["energy_j"]) * 1e3)]}
        )
        for key, get in (
            ("spark:power", fields["DCGM_FI_DEV_POWER_USAGE"]),
            ("spark:mem", fields["DCGM_FI_DEV_FB_USED"]),
        ):
            answers[key].append(
                {"metric": labels, "values": [[start + i, str(get(r))] for i, r in enumerate(part[::5])]}
            )
    return assemble(answers, "http://prom:9090", '{job="train"}', start, end, took_s=0.012)
