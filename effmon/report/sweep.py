"""An energy sweep's figures, cell by cell, from its session (``effmon sweep``; see docs/energy.md).

Each cell is a phase of the session; its figures are the report's figures of that window (the same metric
registry: energy from the counter where every GPU has one, else integrated power; AEC; IT) beside the load's own
latencies, with the idle phase's power as the static part every cell pays:

    static J = idle power x the cell's duration        dynamic J = energy - static J
    J / output token = energy / output tokens (the server's usage)        J / request = energy / requests served

Charts (matplotlib, imported only when drawn): J/token heatmaps over input x output length (one per concurrency),
the Pareto front of J/token against latency across cells, and J/token per task.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from effmon.core.store import SessionReader
from effmon.metrics import MetricsError, evaluate, resolve_window

COLUMNS = (
    "name", "task", "input_tokens", "output_tokens", "concurrency", "sm_clock_locked", "power_limit_w", "duration_s",
    "requests", "output_tokens_served",
    "energy_j", "energy_source", "static_j", "dynamic_j", "J_per_output_token", "dynamic_J_per_output_token",
    "J_per_request", "power_avg_w", "AEC_w", "IT_tokens_per_s", "tokens_per_s", "sm_clock_mhz", "throttle_share",
    "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "e2e_p50_s", "e2e_p99_s", "prefill_share",
    "server_prefill_s", "server_decode_s", "server_decode_share", "rounds",
    "spread", "stable",
)  # fmt: skip


class SweepMissing(MetricsError):
    pass


def _per(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def idle_power(reader: SessionReader, phase: str = "idle") -> float | None:
    """An idle phase's average power, all GPUs (W): the static power of the cells at its GPU setting."""
    try:
        s = evaluate(reader, resolve_window(reader, phase=phase), with_series=False)
    except MetricsError:
        return None
    return s.value("AEC")


def cell_figures(reader: SessionReader, cell: dict[str, Any], idle_w: float | None) -> dict[str, Any]:
    w = resolve_window(reader, phase=cell["name"])
    s = evaluate(reader, w, with_series=False)
    load = cell.get("load") or {}
    energy = s.value("energy_j")
    tokens = s.inference.generated_tokens if s.inference else None
    served = load.get("succeeded")
    static = idle_w * w.duration if idle_w is not None else None  # idle_w: the idle phase at the cell's setting
    dynamic = energy - static if energy is not None and static is not None else None
    clocks = [g.sm_clock_avg_mhz for g in s.gpus if g.sm_clock_avg_mhz is not None]
    throttle = s.value("throttle_s")
    ttft, e2e = load.get("ttft_s") or {}, load.get("e2e_s") or {}
    return {
        **{
            k: cell.get(k)
            for k in (
                "name",
                "task",
                "input_tokens",
                "output_tokens",
                "concurrency",
                "sm_clock_locked",
                "power_limit_w",
            )
        },  # fmt: skip
        "t_start": w.start,
        "t_end": w.end,
        "idle_power_w": idle_w,
        "duration_s": w.duration,
        "requests": served,
        "output_tokens_served": tokens,
        "energy_j": energy,
        "energy_source": s.value("energy_source"),
        "static_j": static,
        "dynamic_j": dynamic,
        "J_per_output_token": _per(energy, tokens),
        "dynamic_J_per_output_token": _per(dynamic, tokens),
        "J_per_request": _per(energy, served),
        "power_avg_w": _per(energy, w.duration),
        "AEC_w": s.value("AEC"),
        "IT_tokens_per_s": s.value("IT"),
        "tokens_per_s": _per(tokens, w.duration),
        "sm_clock_mhz": sum(clocks) / len(clocks) if clocks else None,
        "throttle_share": _per(throttle, w.duration),
        "ttft_p50_s": ttft.get("p50"),
        "ttft_p99_s": ttft.get("p99"),
        "tpot_p50_s": (load.get("tpot_s") or {}).get("p50"),
        "tpot_p99_s": (load.get("tpot_s") or {}).get("p99"),
        "e2e_p50_s": e2e.get("p50"),
        "e2e_p99_s": e2e.get("p99"),
        # the client sees prefill (and queueing) up to the first token, decode after it
        "prefill_share": _per(ttft.get("mean"), e2e.get("mean")),
        **server_phases(reader, w.start, w.end),
        "rounds": cell.get("rounds"),
        "spread": cell.get("spread"),
        "stable": cell.get("stable"),
    }


def server_phases(reader: SessionReader, start: float, end: float) -> dict[str, float | None]:
    """The server's own prefill and decode time over the cell, where it says them (vLLM's request_prefill_time and
    request_decode_time histograms' sums, read by the vLLM source): the increase of each sum between the first and
    the last scrape inside the cell, and decode's share of the two."""
    rows = reader.rows_between("serving", start, end) if reader.has("serving") else []
    out: dict[str, float | None] = {"server_prefill_s": None, "server_decode_s": None, "server_decode_share": None}
    for key, name in (("prefill_seconds_total", "server_prefill_s"), ("decode_seconds_total", "server_decode_s")):
        seen = [r[key] for r in rows if r.get(key) is not None]
        if len(seen) >= 2:
            out[name] = seen[-1] - seen[0]
    busy = (out["server_prefill_s"] or 0.0) + (out["server_decode_s"] or 0.0)
    if out["server_decode_s"] is not None and busy:
        out["server_decode_share"] = out["server_decode_s"] / busy
    return out


def sweep_figures(reader: SessionReader) -> dict[str, Any]:
    """Every cell's figures and the idle baseline; SweepMissing when the session holds no sweep."""
    meta = reader.meta()
    sweep = meta.get("sweep")
    if not sweep or not sweep.get("cells"):
        raise SweepMissing(f"session {meta.get('name')} holds no sweep cells (it was not recorded by effmon sweep)")
    idle = {name: idle_power(reader, name) for name in {"idle", *(c.get("idle_phase", "idle") for c in sweep["cells"])}}
    cells = [cell_figures(reader, c, idle[c.get("idle_phase", "idle")]) for c in sweep["cells"]]
    return {"session": meta.get("name"), "idle_power_w": idle["idle"], "idle_power_by_setting_w": idle,
            "plan": sweep.get("plan"), "cells": cells}  # fmt: skip


def to_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(COLUMNS)
    for c in doc["cells"]:
        out.writerow(["" if c.get(k) is None else c[k] for k in COLUMNS])
    return buf.getvalue()


def table_rows(doc: dict[str, Any], wide: bool = True) -> list[tuple[str, ...]]:
    """The report's table: one row per cell (``wide``: every column of TABLE_HEAD, else NARROW's); latencies are
    medians."""

    def f(x: Any, spec: str, scale: float = 1.0) -> str:
        return "N/A" if x is None else f"{x * scale:{spec}}"

    rows = [
        {
            "cell": c["name"],
            "J/tok": f(c["J_per_output_token"], ".3g"),
            "dyn J/tok": f(c["dynamic_J_per_output_token"], ".3g"),
            "J/req": f(c["J_per_request"], ".3g"),
            "AEC W": f(c["AEC_w"], ".1f"),
            "IT tok/s": f(c["IT_tokens_per_s"], ".1f"),
            "tok/s": f(c["tokens_per_s"], ".1f"),
            "SM MHz": f(c["sm_clock_mhz"], ".0f"),
            "TTFT ms": f(c["ttft_p50_s"], ".0f", 1e3),
            "TPOT ms": f(c["tpot_p50_s"], ".1f", 1e3),
            "E2E s": f(c["e2e_p50_s"], ".2f"),
            "stable": "yes" if c["stable"] else "no",
        }  # fmt: skip
        for c in doc["cells"]
    ]
    head = TABLE_HEAD if wide else NARROW
    return [tuple(r[h] for h in head) for r in rows]


TABLE_HEAD = (
    "cell", "J/tok", "dyn J/tok", "J/req", "AEC W", "IT tok/s", "tok/s", "SM MHz", "TTFT ms", "TPOT ms",
    "E2E s", "stable",
)  # fmt: skip
NARROW = ("cell", "J/tok", "dyn J/tok", "AEC W", "tok/s", "TTFT ms", "E2E s", "stable")
"""The columns an 80-column terminal holds."""


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The cells no other cell beats on both latency and J/token (lower is better on both), by latency."""
    front, best = [], float("inf")
    for lat, jpt, name in sorted(points):
        if jpt < best:
            front.append((lat, jpt, name))
            best = jpt
    return front


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def charts(doc: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(title, PNG) of every chart the sweep has data for."""
    cells = [c for c in doc["cells"] if c["J_per_output_token"] is not None]
    out: list[tuple[str, bytes]] = []
    grid = [c for c in cells if c["task"] is None]
    if grid and len({c["input_tokens"] for c in grid}) * len({c["output_tokens"] for c in grid}) > 1:
        out.append(("J per output token over input x output length", _heatmaps(grid)))
    points = [(c["e2e_p50_s"], c["J_per_output_token"], c["name"]) for c in cells if c["e2e_p50_s"] is not None]
    if len(points) > 1:
        out.append(("Energy per token against latency: the Pareto front", _pareto_chart(points)))
    tasks = [c for c in cells if c["task"] is not None]
    if tasks:
        out.append(("J per output token by task", _task_bars(tasks)))
    return out


def _setting(c: dict[str, Any]) -> str:
    """The GPU setting a cell ran at ('' when the GPU chose)."""
    parts = [f"SM {c['sm_clock_locked']} MHz" if c.get("sm_clock_locked") else "",
             f"{c['power_limit_w']:g} W limit" if c.get("power_limit_w") else ""]  # fmt: skip
    return " · ".join(p for p in parts if p)


def _heatmap_panel(
    ax: Any, cells: list[dict[str, Any]], ins: list[int], outs: list[int], scale: tuple[float, float]
) -> Any:
    """One panel: J per output token by input (rows) and output (columns) length, each cell's value written on it."""
    lo, hi = scale
    grid = [[float("nan")] * len(outs) for _ in ins]
    for c in cells:
        grid[ins.index(c["input_tokens"])][outs.index(c["output_tokens"])] = c["J_per_output_token"]
    image = ax.imshow(grid, cmap="viridis_r", vmin=lo, vmax=hi, aspect="auto", origin="lower")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v == v:  # dark text on the light (low) end of the scale, white on the dark end
                colour = "black" if v < (lo + hi) / 2 else "white"
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(outs)), [str(o) for o in outs])
    ax.set_yticks(range(len(ins)), [str(i) for i in ins])
    ax.set_xlabel("output tokens")
    return image


def _heatmaps(cells: list[dict[str, Any]]) -> bytes:
    """A panel per concurrency (columns) and per GPU setting (rows), one colour scale for all."""
    conc = sorted({c["concurrency"] for c in cells})
    settings = sorted({_setting(c) for c in cells})
    ins, outs = sorted({c["input_tokens"] for c in cells}), sorted({c["output_tokens"] for c in cells})
    fig = _figure(3.6 * len(conc) + 0.8, (0.5 * len(ins) + 2.0) * len(settings) + 0.2)
    values = [c["J_per_output_token"] for c in cells]
    image = None
    for r, setting in enumerate(settings):
        for k, n in enumerate(conc):
            ax = fig.add_subplot(len(settings), len(conc), r * len(conc) + k + 1)
            mine = [c for c in cells if c["concurrency"] == n and _setting(c) == setting]
            image = _heatmap_panel(ax, mine, ins, outs, (min(values), max(values)))
            ax.set_ylabel("input tokens" if k == 0 else "")
            ax.set_title(f"concurrency {n}" + (f" · {setting}" if setting else ""), fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=fig.axes, label="J / output token")
    return _png(fig)


def _pareto_chart(points: list[tuple[float, float, str]]) -> bytes:
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=18, color="#8c959f", label="cells")
    front = pareto(points)
    ax.plot([p[0] for p in front], [p[1] for p in front], "-o", color="#cf222e", ms=5, label="Pareto front")
    for lat, jpt, name in front:
        ax.annotate(name, (lat, jpt), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("E2E latency p50 (s)")
    ax.set_ylabel("J / output token")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _task_bars(cells: list[dict[str, Any]]) -> bytes:
    tasks = sorted({c["task"] for c in cells})
    settings = sorted({(c["output_tokens"], c["concurrency"], _setting(c)) for c in cells})
    fig = _figure(max(5, 1.6 * len(tasks) * max(1, len(settings)) ** 0.5 + 2), 3.4)
    ax = fig.add_subplot()
    width = 0.8 / len(settings)
    for k, (out, conc, gpu) in enumerate(settings):
        ys = [next((c["J_per_output_token"] for c in cells if c["task"] == t and c["output_tokens"] == out
                    and c["concurrency"] == conc and _setting(c) == gpu), 0.0) for t in tasks]  # fmt: skip
        label = f"out {out}, c {conc}" + (f", {gpu}" if gpu else "")
        ax.bar([i + k * width for i in range(len(tasks))], ys, width, label=label)
    ax.set_xticks([i + width * (len(settings) - 1) / 2 for i in range(len(tasks))], tasks)
    ax.set_ylabel("J / output token")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)
