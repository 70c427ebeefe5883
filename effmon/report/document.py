"""Markdown and HTML session reports with plots (matplotlib, imported only here).

HTML is self-contained (images inlined as base64 PNG, styles inline); Markdown writes its images into a
folder beside it. The same code writes a report of a live session (the dashboard's ``r``).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effmon.core.files import UnsafePath, check_target, private_dir, safe_write
from effmon.core.fmt import html_text, human_duration, md_text, timestamp
from effmon.core.store import Series
from effmon.metrics import METRICS, ExactAggregation, Summary
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


def _status(meta: dict[str, Any]) -> str:
    code = meta.get("exit_code")
    return f"{meta.get('status')}" + (f", exit {code}" if code is not None else "")


def _model(model: dict[str, Any]) -> str:
    kind = model.get("type") or model.get("model_type") or "-"
    trainable = f", {model['trainable_params']} trainable" if model.get("trainable_params") else ""
    return f"{kind}, {model.get('params') or '?'} parameters{trainable}"


def _peft(peft: dict[str, Any]) -> str:
    return f"{peft.get('method')} (r={peft.get('r')}, alpha={peft.get('alpha')})" if peft else "-"


def facts(meta: dict[str, Any], s: Summary) -> list[tuple[str, str]]:
    gpus = meta.get("gpus") or []
    preset = meta.get("preset") or {}
    return [
        ("session", str(meta.get("name"))),
        ("command", " ".join(meta.get("command") or []) or "-"),
        ("status", _status(meta)),
        ("started", timestamp(meta.get("wall_started_at"))),
        ("window", f"{s.window.label} ({human_duration(s.window.duration)})"),
        ("preset", str(preset.get("name") or "-")),
        ("model", _model(s.model or {})),
        ("PEFT method", _peft((s.model or {}).get("peft") or {})),
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


ENVELOPE_POINTS = 400
"""Buckets per line (the plot is about 1000 px wide): above this a series is drawn from each bucket's min and max."""


def envelope(t: np.ndarray, x: np.ndarray, buckets: int = ENVELOPE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most two points per time bucket: its minimum and maximum, drawn at the bucket's middle (the
    line's outline at any width: a spike is never averaged away)."""
    import numpy as np

    ok = ~np.isnan(x)
    t, x = t[ok], x[ok]
    if len(t) <= 2 * buckets:
        return t, x
    edges = np.linspace(t[0], t[-1], buckets + 1)
    slot = np.clip(np.searchsorted(edges, t, "right") - 1, 0, buckets - 1)
    starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
    middle = (edges[slot[starts]] + edges[slot[starts] + 1]) / 2
    return np.repeat(middle, 2), np.column_stack(
        (np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts))
    ).ravel()


class _Figures:
    """Figures over the window's time (seconds from its start), phases shaded, written as PNG."""

    def __init__(self, w0: float, w1: float, phases: list[dict[str, Any]]):
        self.w0, self.w1, self.phases = w0, w1, phases
        self.out: list[tuple[str, bytes]] = []

    def axes(self, height: float = 3.0) -> tuple[Any, Any]:
        """matplotlib's object API (no pyplot: nothing global, less to import)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, height))
        FigureCanvasAgg(fig)
        return fig, fig.add_subplot()

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
        if ax.get_legend() is None and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left")
        buf = io.BytesIO()
        height = fig.get_figheight()  # fixed margins: every figure has this shape (tight_layout draws it twice)
        fig.subplots_adjust(left=0.08, right=0.99, top=1 - 0.3 / height, bottom=0.5 / height)
        fig.savefig(buf, format="png", dpi=110, pil_kwargs={"compress_level": 1})
        self.out.append((title, buf.getvalue()))


COMPUTE_LINES = (
    ("sm_active_pct", "-", 1.3, "SM activity (GPM)"),
    ("tensor_active_pct", "--", 1.0, "tensor activity (GPM)"),
    ("util_gpu_pct", ":", 1.0, "NVML utilisation (any kernel running)"),
)


def _compute_figure(f: _Figures, gpu: dict[int, Series], gpm: dict[int, Series]) -> None:
    """One GPU: a colour per measure. Several: a colour per GPU and a line style per measure, so the
    legend stays short at 8 GPUs."""
    from matplotlib.lines import Line2D

    fig, ax = f.axes()
    several = len(gpu) > 1
    for n, (idx, series) in enumerate(gpu.items()):
        for m, (column, style, width, label) in enumerate(COMPUTE_LINES):
            source = series if column == "util_gpu_pct" else gpm.get(idx)
            colour = f"C{(n if several else m) % 10}"
            if source is not None:
                f.line(ax, source, column, color=colour, ls=style, lw=width, label=None if several else label)
        if several:
            ax.plot([], [], color=f"C{n % 10}", lw=6, label=f"GPU {idx}")
    handles, labels = ax.get_legend_handles_labels()
    if several:
        for _, style, width, label in COMPUTE_LINES:
            handles.append(Line2D([], [], color="#57606a", ls=style, lw=width))
            labels.append(label)
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper left", ncol=2 if several else 1)
    ax.set_ylim(0, 105)
    f.finish(fig, ax, "Compute: SM and tensor activity beside NVML utilisation", "%")


def _gpu_figures(f: _Figures, gpu: dict[int, Series], gpm: dict[int, Series]) -> None:
    import numpy as np

    fig, ax = f.axes()
    for idx, series in gpu.items():
        f.line(ax, series, "mem_used_bytes", 1 / 2**30, lw=1.2, label=f"GPU {idx}")
    f.finish(fig, ax, "GPU memory used", "GiB")
    _compute_figure(f, gpu, gpm)
    fig, ax = f.axes()
    limits: set[float] = set()
    for idx, series in gpu.items():
        f.line(ax, series, "power_w", lw=1.2, label=f"GPU {idx} power")
        if "power_limit_w" in series:
            limits |= {v for v in np.unique(series["power_limit_w"]).tolist() if v == v}
    for limit in sorted(limits):  # GPUs usually share their limit: one line for all
        ax.axhline(limit, lw=1, ls=":", color="#cf222e", label=f"power limit {limit:.0f} W")
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


def plots(agg: ExactAggregation, s: Summary) -> list[tuple[str, bytes]]:
    """PNG figures over the session's time (seconds from its start), phases shaded."""
    w0, w1 = s.window.start, s.window.end
    f = _Figures(w0, w1, [p for p in agg.reader.phases() if p["t_end"] >= w0 and p["t_start"] <= w1])
    gpu = agg.series("gpu")
    if gpu:
        _gpu_figures(f, gpu, agg.series("gpu_gpm"))
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


def write(agg: ExactAggregation, s: Summary, fmt: str, out: Path, force: bool = False) -> Path:
    """The report of a summary evaluated with ``agg`` (its series are drawn without reading them again), written
    with ``safe_write`` (atomic, never through a link or over a device unless ``force``)."""
    meta = agg.reader.meta()
    target = check_target(out, force)[0]  # refused before the plots are drawn
    figures = plots(agg, s)
    cut = meta.get("status") == "recording" and not meta.get("ended_at")
    warning = (
        (
            "This session was not closed by its recorder (live, or the recorder was killed): the report covers "
            "what was written up to its last sample."
        )
        if cut
        else None
    )
    sweep = sweep_part(agg) if meta.get("sweep") else None
    if fmt == "html":
        return safe_write(out, html_report(meta, s, figures, warning, sweep), force)
    img_dir = target.with_name(target.stem + "_files")
    images = [(title, f"{img_dir.name}/{name}") for title, name, _ in _named(figures)]
    if sweep is not None:  # the sweep's charts are files beside the report too, numbered after the others
        figures = figures + sweep.charts
        sweep.images = [f"{img_dir.name}/{name}" for _, name, _ in _named(figures)[len(images) :]]
    text = markdown_report(meta, s, images, warning, sweep)
    if img_dir.is_symlink() or (img_dir.exists() and not img_dir.is_dir()):
        raise UnsafePath(f"{img_dir} (for the report's images) is a link or a file; remove it or pick another -o")
    private_dir(img_dir)
    for _, name, png in _named(figures):
        safe_write(img_dir / name, png)
    return safe_write(out, text, force)


@dataclass
class SweepPart:
    """An energy sweep's section (effmon sweep): its idle power, table and charts."""

    idle_w: float | None
    head: tuple[str, ...]
    rows: list[tuple[str, ...]]
    charts: list[tuple[str, bytes]]
    images: list[str] = field(default_factory=list)

    @property
    def intro(self) -> str:
        idle = "N/A" if self.idle_w is None else f"{self.idle_w:.1f} W"
        return (
            f"Each cell is a phase of this session. Idle power {idle}: the static part every cell pays "
            "(static J = idle power x the cell's duration; dynamic J = energy - static J). J/tok is per output "
            "token as the server counted it (usage); latencies are medians. docs/energy.md says how."
        )


def sweep_part(agg: ExactAggregation) -> SweepPart:
    from effmon.report.sweep import TABLE_HEAD, charts, sweep_figures, table_rows

    doc = sweep_figures(agg.reader)
    return SweepPart(doc["idle_power_w"], TABLE_HEAD, table_rows(doc), charts(doc))


def _named(figures: list[tuple[str, bytes]]) -> list[tuple[str, str, bytes]]:
    return [(title, f"{i:02d}-{_slug(title)}.png", png) for i, (title, png) in enumerate(figures)]


def markdown_report(
    meta: dict[str, Any], s: Summary, images: list[tuple[str, str]], warning: str | None, sweep: SweepPart | None = None
) -> str:
    """Every string from the session (its name, command, notes) is literal Markdown text (``md_text``)."""
    m = md_text
    lines = [f"# effmon report: {m(meta.get('name'))}", ""]
    if warning:
        lines += [f"> **Note:** {warning}", ""]
    lines += ["## What ran", "", "| | |", "|---|---|"] + [f"| {k} | {m(v)} |" for k, v in facts(meta, s)]
    lines += ["", "## EfficientLLM metrics", "", "| metric | value | unit / source |", "|---|---|---|"]
    lines += [f"| {m(k)} | {m(v)} | {m(u)} |" for k, v, u in metric_rows(s)]
    lines += ["", "## Energy", "", "| | value | unit / source |", "|---|---|---|"]
    lines += [f"| {m(k)} | {m(v)} | {m(u)} |" for k, v, u in energy_rows(s)]
    lines += ["", "## Over time", ""]
    for title, src in images:
        lines += [f"### {m(title)}", "", f"![{m(title)}]({src})", ""]
    if sweep is not None:
        lines += ["## Energy sweep", "", sweep.intro, "", "| " + " | ".join(sweep.head) + " |"]
        lines += ["|" + "---|" * len(sweep.head)] + ["| " + " | ".join(m(c) for c in r) + " |" for r in sweep.rows]
        lines += [""]
        for (title, _), src in zip(sweep.charts, sweep.images, strict=True):
            lines += [f"### {m(title)}", "", f"![{m(title)}]({src})", ""]
    if s.notes:
        lines += ["## Notes", ""] + [f"- {m(n)}" for n in s.notes]
    return "\n".join(lines) + "\n"


def html_report(
    meta: dict[str, Any],
    s: Summary,
    figures: list[tuple[str, bytes]],
    warning: str | None,
    sweep: SweepPart | None = None,
) -> str:
    """Every string from the session is literal HTML text (``html_text``: escaped, control characters visible)."""
    e = html_text

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
    if sweep is not None:
        parts += ["<h2 id='sweep'>Energy sweep</h2>", f"<p>{e(sweep.intro)}</p>", table(sweep.rows, sweep.head)]
        for title, png in sweep.charts:
            data = base64.b64encode(png).decode()
            parts.append(f"<h3>{e(title)}</h3><img alt='{e(title)}' src='data:image/png;base64,{data}'>")
    if s.notes:
        parts.append(
            "<h2 id='notes'>Notes</h2><ul>" + "".join(f"<li class='note'>{e(n)}</li>" for n in s.notes) + "</ul>"
        )
    parts.append("</body></html>")
    return "".join(parts)
