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
from typing import TYPE_CHECKING, Any

from effmon.core.fmt import human_duration, timestamp
from effmon.core.store import Series, SessionReader
from effmon.metrics import METRICS, Summary
from effmon.report.render import metric_rows

if TYPE_CHECKING:
    import numpy as np

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1b1f24}h1{margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #d0d7de;padding:.3em .7em;text-align:left}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
.note{color:#57606a;font-size:.9em}.warn{background:#fff8c5;border:1px solid #d4a72c;padding:.5em 1em}"""


def _fmt(x: Any, spec: str = ".4g") -> str:
    return "N/A" if x is None else format(x, spec) if isinstance(x, (int, float)) else str(x)


def facts(meta: dict[str, Any], s: Summary) -> list[tuple[str, str]]:
    model = s.model or {}
    peft = model.get("peft") or {}
    gpus = meta.get("gpus") or []
    preset = meta.get("preset") or {}
    return [
        ("session", str(meta.get("name"))),
        ("command", " ".join(meta.get("command") or []) or "-"),
        (
            "status",
            f"{meta.get('status')}" + (f", exit {meta['exit_code']}" if meta.get("exit_code") is not None else ""),
        ),
        ("started", timestamp(meta.get("wall_started_at"))),
        ("window", f"{s.window.label} ({human_duration(s.window.duration)})"),
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
        ("effmon", str(s.effmon_version)),
    ]


def energy_rows(s: Summary) -> list[tuple[str, str, str]]:
    """Every energy metric, known or not (N/A with the reason)."""
    return [
        (m.label, m.format(s.value(key)), s.result(key).reason or m.detail_text(s) or m.description)
        for key, m in METRICS.items()
        if m.family == "energy"
    ]


ENVELOPE_POINTS = 1500
"""Buckets per line: above this a series is drawn from each bucket's min and max (what the eye sees)."""


def envelope(t: np.ndarray, x: np.ndarray, buckets: int = ENVELOPE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most two points per time bucket, the bucket's minimum and maximum in time order."""
    import numpy as np

    ok = ~np.isnan(x)
    t, x = t[ok], x[ok]
    if len(t) <= 2 * buckets:
        return t, x
    edges = np.linspace(t[0], t[-1], buckets + 1)
    slot = np.clip(np.searchsorted(edges, t, "right") - 1, 0, buckets - 1)
    starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
    lo = np.minimum.reduceat(x, starts)
    hi = np.maximum.reduceat(x, starts)
    i_lo = np.array([a + int(np.argmin(x[a:b])) for a, b in zip(starts, np.r_[starts[1:], len(x)], strict=True)])
    i_hi = np.array([a + int(np.argmax(x[a:b])) for a, b in zip(starts, np.r_[starts[1:], len(x)], strict=True)])
    first = i_lo <= i_hi
    ts = np.column_stack((np.where(first, t[i_lo], t[i_hi]), np.where(first, t[i_hi], t[i_lo]))).ravel()
    ys = np.column_stack((np.where(first, lo, hi), np.where(first, hi, lo))).ravel()
    return ts, ys


class _Figures:
    """Figures over the window's time (seconds from its start), phases shaded, written as PNG."""

    def __init__(self, w0: float, w1: float, phases: list[dict[str, Any]]):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt, self.w0, self.w1, self.phases = plt, w0, w1, phases
        self.out: list[tuple[str, bytes]] = []

    def axes(self, height: float = 3.0) -> tuple[Any, Any]:
        return self.plt.subplots(figsize=(10, height))

    def line(self, ax: Any, series: Series, column: str, scale: float = 1.0, **kw: Any) -> bool:
        """Draw one column over the window; False when it has no reading there."""
        if column not in series:
            return False
        inside = (series.t >= self.w0) & (series.t <= self.w1)
        t, y = envelope(series.t[inside], series[column][inside] * scale)
        if not len(t):
            return False
        ax.plot(t - self.w0, y, **kw)
        return True

    def finish(self, fig: Any, ax: Any, title: str, ylabel: str, shade: bool = True) -> None:
        for i, p in enumerate(self.phases if shade else []):
            ax.axvspan(
                p["t_start"] - self.w0, p["t_end"] - self.w0, color="#ddf4ff" if i % 2 else "#fff8c5", alpha=0.6, lw=0
            )
            ax.text(
                (p["t_start"] + p["t_end"]) / 2 - self.w0,
                1.0,
                p["name"],
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=7,
                color="#57606a",
            )
        if shade:
            ax.set_xlabel("seconds from the start")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left")
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        self.plt.close(fig)
        self.out.append((title, buf.getvalue()))


def _gpu_figures(f: _Figures, gpu: dict[int, Series], gpm: dict[int, Series]) -> None:
    fig, ax = f.axes()
    for idx, series in gpu.items():
        f.line(ax, series, "mem_used_bytes", 1 / 2**30, lw=1.2, label=f"GPU {idx}")
    f.finish(fig, ax, "GPU memory used", "GiB")
    fig, ax = f.axes()
    for idx, series in gpu.items():
        f.line(ax, series, "util_gpu_pct", lw=0.8, ls="--", label=f"GPU {idx} NVML utilisation (any kernel running)")
        for col, label in (("sm_active_pct", "SM activity (GPM)"), ("tensor_active_pct", "tensor activity (GPM)")):
            if idx in gpm:
                f.line(ax, gpm[idx], col, lw=1.2, label=f"GPU {idx} {label}")
    ax.set_ylim(0, 105)
    f.finish(fig, ax, "Compute: SM and tensor activity beside NVML utilisation", "%")
    fig, ax = f.axes()
    for idx, series in gpu.items():
        f.line(ax, series, "power_w", lw=1.2, label=f"GPU {idx} power")
        f.line(ax, series, "power_limit_w", lw=1, ls=":", color="#cf222e", label=f"GPU {idx} power limit")
    f.finish(fig, ax, "Power with the power limit", "W")
    fig, ax = f.axes(2.6)
    for idx, series in gpu.items():
        f.line(ax, series, "sm_clock_mhz", lw=1.2, label=f"GPU {idx} SM clock")
    f.finish(fig, ax, "Clocks", "MHz")


def _step_figures(f: _Figures, steps: list[dict[str, Any]]) -> None:
    import numpy as np

    end = np.array([st["t_end"] for st in steps]) - f.w0
    took = np.array([st["t_end"] - st["t_start"] for st in steps])
    fig, ax = f.axes()
    ax.plot(*envelope(end, took), ".", ms=3, label="step time")
    f.finish(fig, ax, "Step time", "s")
    fig, ax = f.axes()
    tokens = np.array([float(st.get("tokens") or 0) for st in steps])
    ax.plot(*envelope(end, tokens / np.maximum(took, 1e-9)), lw=1, label="tokens/s per step")
    f.finish(fig, ax, "Throughput", "tokens/s")


def plots(reader: SessionReader, s: Summary) -> list[tuple[str, bytes]]:
    """PNG figures over the session's time (seconds from its start), phases shaded."""
    w0, w1 = s.window.start, s.window.end
    f = _Figures(w0, w1, [p for p in reader.phases() if p["t_end"] >= w0 and p["t_start"] <= w1])
    gpu = reader.series("gpu", ["mem_used_bytes", "util_gpu_pct", "power_w", "power_limit_w", "sm_clock_mhz"]).by_key
    if gpu:
        _gpu_figures(f, gpu, reader.series("gpu_gpm", ["sm_active_pct", "tensor_active_pct"]).by_key)
    if s.steps.rows:
        _step_figures(f, s.steps.rows)
    elif s.requests.latencies:
        fig, ax = f.axes()
        ax.hist(s.requests.latencies, bins=30, color="#0969da")
        ax.set_xlabel("end-to-end latency (s)")
        f.finish(fig, ax, "Request latency distribution", "requests", shade=False)
    return f.out


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")[:40]


def write(reader: SessionReader, s: Summary, fmt: str, out: Path) -> Path:
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
    meta: dict[str, Any], s: Summary, figures: list[tuple[str, bytes]], warning: str | None, out: Path
) -> Path:
    img_dir = out.with_name(out.stem + "_files")
    img_dir.mkdir(exist_ok=True)
    lines = [f"# effmon report: {meta.get('name')}", ""]
    if warning:
        lines += [f"> **Note:** {warning}", ""]
    lines += ["## What ran", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts(meta, s)]
    lines += ["", "## EfficientLLM metrics", "", "| metric | value | unit / source |", "|---|---|---|"]
    lines += [f"| {k} | {v} | {u} |" for k, v, u in metric_rows(s)]
    lines += ["", "## Energy", "", "| | value | unit / source |", "|---|---|---|"]
    lines += [f"| {k} | {v} | {u} |" for k, v, u in energy_rows(s)]
    lines += ["", "## Over time", ""]
    for i, (title, png) in enumerate(figures):
        name = f"{i:02d}-{_slug(title)}.png"
        (img_dir / name).write_bytes(png)
        lines += [f"### {title}", "", f"![{title}]({img_dir.name}/{name})", ""]
    if s.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in s.notes]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _html(meta: dict[str, Any], s: Summary, figures: list[tuple[str, bytes]], warning: str | None, out: Path) -> Path:
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
        table(energy_rows(s), ("", "value", "unit / source")),
        "<h2 id='over-time'>Over time</h2>",
    ]
    for title, png in figures:
        data = base64.b64encode(png).decode()
        parts.append(f"<h3>{e(title)}</h3><img alt='{e(title)}' src='data:image/png;base64,{data}'>")
    if s.notes:
        parts.append(
            "<h2 id='notes'>Notes</h2><ul>" + "".join(f"<li class='note'>{e(n)}</li>" for n in s.notes) + "</ul>"
        )
    parts.append("</body></html>")
    out.write_text("".join(parts), encoding="utf-8")
    return out
