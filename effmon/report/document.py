"""Markdown and HTML session reports with plots (matplotlib, imported only here).

HTML is self-contained (images inlined as base64 PNG, styles inline); Markdown writes its images into a
folder beside it. The same code writes a report of a live session (the dashboard's ``r``).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from effmon.fmt import human_duration, human_energy, timestamp
from effmon.metrics.engine import _by_gpu
from effmon.store import SessionReader

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1b1f24}h1{margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #d0d7de;padding:.3em .7em;text-align:left}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
.note{color:#57606a;font-size:.9em}.warn{background:#fff8c5;border:1px solid #d4a72c;padding:.5em 1em}"""


def _fmt(x: Any, spec: str = ".4g") -> str:
    return "N/A" if x is None else format(x, spec) if isinstance(x, (int, float)) else str(x)


def facts(meta: dict[str, Any], s: dict[str, Any]) -> list[tuple[str, str]]:
    model = s.get("model") or {}
    peft = model.get("peft") or {}
    gpus = meta.get("gpus") or []
    preset = meta.get("preset") or {}
    rows = [
        ("session", str(meta.get("name"))),
        ("command", " ".join(meta.get("command") or []) or "-"),
        (
            "status",
            f"{meta.get('status')}" + (f", exit {meta['exit_code']}" if meta.get("exit_code") is not None else ""),
        ),
        ("started", timestamp(meta.get("wall_started_at"))),
        ("window", f"{s['window']['label']} ({human_duration(s['window']['duration_s'])})"),
        ("preset", str(preset.get("name") or "-")),
        (
            "model",
            f"{model.get('type') or model.get('model_type') or '-'}, {model.get('params') or '?'} parameters"
            + (f", {model.get('trainable_params')} trainable" if model.get("trainable_params") else ""),
        ),
        ("PEFT method", f"{peft.get('method')} (r={peft.get('r')}, alpha={peft.get('alpha')})" if peft else "-"),
        ("precision / quantization", str(meta.get("precision") or preset.get("quantization") or "-")),
        ("GPUs", ", ".join(f"{g.get('index')}: {g.get('name')}" for g in gpus) or "none (host only)"),
        ("driver", str(next((g.get("driver") for g in gpus if g.get("driver")), "-"))),
        ("host", str((meta.get("host") or {}).get("hostname", "-"))),
        ("effmon", str(s.get("effmon_version"))),
    ]
    return rows


def metric_rows(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = [
        ("AMU", _fmt(s["AMU"]["gib"], ".3f"), "GiB, time-averaged, summed over GPUs"),
        ("PCU", _fmt(s["PCU"]["value"], ".3f"), f"ratio, from {s['PCU']['source']}"),
        ("AL", _fmt(s["AL"]["value"]), "s per step" if s["run_kind"] == "training" else "s per request"),
        ("TT", _fmt(s["TT"]), "tokens / parameter / s"),
        ("ST", _fmt(s["ST"]), "samples / parameter / s"),
        ("IT", _fmt(s["IT"]), "generated tokens / s"),
        ("AEC", _fmt(s["AEC"]["watts"], ".1f"), "W, average power summed over GPUs"),
        ("MCR", _fmt(s["MCR"]["value"]), s["MCR"].get("reason") or s["MCR"].get("formula", "")),
    ]
    if s["MFU"]["value"] is not None:
        rows.append(("MFU", _fmt(s["MFU"]["value"], ".3f"), s["MFU"]["formula"]))
    return rows


def energy_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    e, per = s["AEC"], s["energy_per"]
    return [
        ("energy (best)", f"{human_energy(e['energy_j'])} from {e['energy_source']}"),
        ("energy, hardware counter", human_energy(e["energy_counter_j"])),
        ("energy, integrated power", human_energy(e["energy_integrated_j"])),
        ("J per token", _fmt(per["token_j"])),
        ("J per sample", _fmt(per["sample_j"])),
        ("J per request", _fmt(per["request_j"])),
        ("J per generated token (server)", _fmt(per.get("generated_token_j"))),
    ]


def plots(reader: SessionReader, s: dict[str, Any]) -> list[tuple[str, bytes]]:
    """PNG figures over the session's time (seconds from its start), phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w0, w1 = s["window"]["start"], s["window"]["end"]
    gpu = _by_gpu(reader, "gpu", ["mem_used_bytes", "util_gpu_pct", "power_w", "power_limit_w", "sm_clock_mhz"])
    gpm = _by_gpu(reader, "gpu_gpm", ["sm_active_pct", "tensor_active_pct"])
    phases = [p for p in reader.dicts("phase") if p["t_end"] >= w0 and p["t_start"] <= w1]
    figures: list[tuple[str, bytes]] = []

    def rel(ts: list[float]) -> list[float]:
        return [t - w0 for t in ts]

    def window(series: dict[str, list[Any]], col: str) -> tuple[list[float], list[Any]]:
        pts = [(t, v) for t, v in zip(series["t"], series[col]) if w0 <= t <= w1 and v is not None]
        return (rel([p[0] for p in pts]), [p[1] for p in pts]) if pts else ([], [])

    def finish(fig: Any, ax: Any, title: str, ylabel: str) -> None:
        for i, p in enumerate(phases):
            ax.axvspan(p["t_start"] - w0, p["t_end"] - w0, color="#ddf4ff" if i % 2 else "#fff8c5", alpha=0.6, lw=0)
            ax.text(
                (p["t_start"] + p["t_end"]) / 2 - w0,
                1.0,
                p["name"],
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=7,
                color="#57606a",
            )
        ax.set_xlabel("seconds from the start")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left")
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        figures.append((title, buf.getvalue()))

    if gpu:
        fig, ax = plt.subplots(figsize=(10, 3))
        for idx, series in gpu.items():
            x, y = window(series, "mem_used_bytes")
            ax.plot(x, [v / 2**30 for v in y], lw=1.2, label=f"GPU {idx}")
        finish(fig, ax, "GPU memory used", "GiB")
        fig, ax = plt.subplots(figsize=(10, 3))
        for idx, series in gpu.items():
            x, y = window(series, "util_gpu_pct")
            ax.plot(x, y, lw=0.8, ls="--", label=f"GPU {idx} NVML utilisation (any kernel running)")
            if idx in gpm:
                for col, label in (
                    ("sm_active_pct", "SM activity (GPM)"),
                    ("tensor_active_pct", "tensor activity (GPM)"),
                ):
                    x2, y2 = window(gpm[idx], col)
                    ax.plot(x2, y2, lw=1.2, label=f"GPU {idx} {label}")
        ax.set_ylim(0, 105)
        finish(fig, ax, "Compute: SM and tensor activity beside NVML utilisation", "%")
        fig, ax = plt.subplots(figsize=(10, 3))
        for idx, series in gpu.items():
            x, y = window(series, "power_w")
            ax.plot(x, y, lw=1.2, label=f"GPU {idx} power")
            xl, yl = window(series, "power_limit_w")
            if yl:
                ax.plot(xl, yl, lw=1, ls=":", color="#cf222e", label=f"GPU {idx} power limit")
        finish(fig, ax, "Power with the power limit", "W")
        fig, ax = plt.subplots(figsize=(10, 2.6))
        for idx, series in gpu.items():
            x, y = window(series, "sm_clock_mhz")
            ax.plot(x, y, lw=1.2, label=f"GPU {idx} SM clock")
        finish(fig, ax, "Clocks", "MHz")
    steps = s.get("_steps") or []
    if steps:
        fig, ax = plt.subplots(figsize=(10, 3))
        ax.plot(
            [st["t_end"] - w0 for st in steps],
            [st["t_end"] - st["t_start"] for st in steps],
            ".",
            ms=3,
            label="step time",
        )
        finish(fig, ax, "Step time", "s")
        fig, ax = plt.subplots(figsize=(10, 3))
        xs = [st["t_end"] - w0 for st in steps]
        ys = [(st.get("tokens") or 0) / max(1e-9, st["t_end"] - st["t_start"]) for st in steps]
        ax.plot(xs, ys, lw=1, label="tokens/s per step")
        finish(fig, ax, "Throughput", "tokens/s")
    latencies = s.get("_latencies") or []
    if latencies and not steps:
        fig, ax = plt.subplots(figsize=(10, 3))
        ax.hist(latencies, bins=30, color="#0969da")
        ax.set_xlabel("end-to-end latency (s)")
        ax.set_ylabel("requests")
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        figures.append(("Request latency distribution", buf.getvalue()))
    return figures


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")[:40]


def write(reader: SessionReader, s: dict[str, Any], fmt: str, out: Path) -> Path:
    meta = reader.meta()
    figures = plots(reader, s)
    cut = meta.get("status") == "recording" and not meta.get("ended_at")
    warning = (
        (
            "This session was not closed by its recorder (live, or the recorder was killed): the report covers "
            "what was written up to its last sample."
        )
        if cut
        else None
    )
    if fmt == "html":
        return _html(meta, s, figures, warning, out)
    return _markdown(meta, s, figures, warning, out)


def _markdown(
    meta: dict[str, Any], s: dict[str, Any], figures: list[tuple[str, bytes]], warning: str | None, out: Path
) -> Path:
    img_dir = out.with_name(out.stem + "_files")
    img_dir.mkdir(exist_ok=True)
    lines = [f"# effmon report: {meta.get('name')}", ""]
    if warning:
        lines += [f"> **Note:** {warning}", ""]
    lines += ["## What ran", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts(meta, s)]
    lines += ["", "## EfficientLLM metrics", "", "| metric | value | unit / source |", "|---|---|---|"]
    lines += [f"| {k} | {v} | {u} |" for k, v, u in metric_rows(s)]
    lines += ["", "## Energy", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in energy_rows(s)]
    lines += ["", "## Over time", ""]
    for i, (title, png) in enumerate(figures):
        name = f"{i:02d}-{_slug(title)}.png"
        (img_dir / name).write_bytes(png)
        lines += [f"### {title}", "", f"![{title}]({img_dir.name}/{name})", ""]
    if s["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in s["notes"]]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _html(
    meta: dict[str, Any], s: dict[str, Any], figures: list[tuple[str, bytes]], warning: str | None, out: Path
) -> Path:
    e = html.escape

    def table(rows: Sequence[tuple[str, ...]], head: tuple[str, ...] | None = None) -> str:
        h = "<tr>" + "".join(f"<th>{e(c)}</th>" for c in head) + "</tr>" if head else ""
        body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table>{h}{body}</table>"

    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>effmon report: {e(str(meta.get('name')))}"
        f"</title><style>{CSS}</style></head><body>",
        f"<h1>effmon report: {e(str(meta.get('name')))}</h1>",
    ]
    if warning:
        parts.append(f"<p class='warn'>{e(warning)}</p>")
    parts += [
        "<h2 id='what-ran'>What ran</h2>",
        table(facts(meta, s)),
        "<h2 id='metrics'>EfficientLLM metrics</h2>",
        table(metric_rows(s), ("metric", "value", "unit / source")),
        "<h2 id='energy'>Energy</h2>",
        table(energy_rows(s)),
        "<h2 id='over-time'>Over time</h2>",
    ]
    for title, png in figures:
        data = base64.b64encode(png).decode()
        parts.append(f"<h3>{e(title)}</h3><img alt='{e(title)}' src='data:image/png;base64,{data}'>")
    if s["notes"]:
        parts.append(
            "<h2 id='notes'>Notes</h2><ul>" + "".join(f"<li class='note'>{e(n)}</li>" for n in s["notes"]) + "</ul>"
        )
    parts.append("</body></html>")
    out.write_text("".join(parts), encoding="utf-8")
    return out
