"""``effmon compare A B [C ...]``: runs side by side, deltas and ratios against the first (the baseline), the
benchmark's min-max normalisation (higher is better on every axis) and a radar chart of it.

Inputs are sessions or exported JSON (``--format efficientllm`` or ``--format json``). A metric a run lacks is
N/A with the reason, never dropped and never zero-filled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from effmon.metrics import METRICS, MetricDef, Summary


class CompareError(Exception):
    pass


def axes() -> list[MetricDef]:
    """The metrics compared, in order: every declaration with ``compare=True``."""
    return [m for m in METRICS.values() if m.compare]


def _gpu_names(gpus: list[Any]) -> str:
    return ", ".join(sorted({str(g.get("name") if isinstance(g, dict) else g.name) for g in gpus or []})) or "none"


def from_summary(s: Summary, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "values": {m.key: s.value(m.key) for m in axes()},
        "why": {m.key: s.result(m.key).reason for m in axes() if s.value(m.key) is None},
        "gpu": _gpu_names(s.gpus),
    }


def _at(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _from_export(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """An EfficientLLM record (the benchmark's keys at the top, the rest under ``effmon``) or effmon JSON."""
    record = "effmon" in doc and not isinstance(doc.get("AMU"), dict)
    block = doc["effmon"] if record else doc
    values = {}
    for m in axes():
        if record and m.efficientllm:
            values[m.key] = doc.get(m.efficientllm)
        else:
            values[m.key] = _at(block, m.json) if m.json else None
    return {"name": name, "values": values, "gpu": _gpu_names(block.get("gpus") or [])}


def load_run(ref: str, options: Any = None) -> dict[str, Any]:
    path = Path(ref)
    if path.suffix == ".json" and path.is_file():
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise CompareError(f"{ref}: not JSON ({exc})") from None
        if not isinstance(doc, dict) or "AMU" not in doc:
            raise CompareError(f"{ref}: not an effmon export (use --format efficientllm or json)")
        return _from_export(doc, path.stem)  # an export names the run by its file (several can come from one session)
    from effmon.core.jobs import JobError, as_one
    from effmon.core.sessions import resolve
    from effmon.core.store import SessionReader
    from effmon.metrics import MetricsError, evaluate

    try:
        path = as_one([resolve(ref)])[0][0]  # a node's session of a multi-node job: the whole job
    except JobError as exc:
        raise CompareError(f"{ref}: {exc}") from None
    try:
        with SessionReader(path) as reader:
            summary = evaluate(reader, options=options, with_series=False)
            return from_summary(summary, reader.meta().get("name", ref))
    except MetricsError as exc:
        raise CompareError(f"{ref}: {exc}") from None


REPEAT_SEP = ","
"""``effmon compare A1,A2,A3 B1,B2,B3``: repeats of one configuration, compared by their mean with their spread."""


def load_group(ref: str) -> dict[str, Any]:
    """A run, or the repeats of one run (comma-separated): their mean, and per metric its min, max and n."""
    parts = [p for p in ref.split(REPEAT_SEP) if p] if REPEAT_SEP in ref and not Path(ref).exists() else [ref]
    runs = [load_run(p) for p in parts]
    if len(runs) == 1:
        return runs[0]
    values: dict[str, Any] = {}
    spread: dict[str, Any] = {}
    for m in axes():
        got = [r["values"].get(m.key) for r in runs if r["values"].get(m.key) is not None]
        values[m.key] = sum(got) / len(got) if got else None
        if got:
            spread[m.key] = {"min": min(got), "max": max(got), "n": len(got)}
    names = [r["name"] for r in runs]
    return {
        "name": f"{names[0]} (+{len(names) - 1} repeats)",
        "values": values,
        "gpu": runs[0]["gpu"],
        "repeats": names,
        "spread": spread,
    }


def _relative_spread(s: dict[str, Any] | None, mean: float | None) -> float | None:
    if not s or mean in (None, 0) or s["n"] < 2:
        return None
    return (s["max"] - s["min"]) / abs(mean)  # type: ignore[operator]


def _normalized(vals: list[Any], higher: bool) -> list[float | None]:
    """Min-max across the runs, flipped for lower-is-better metrics so that 1 is the best run."""
    present = [v for v in vals if v is not None]
    if not present:
        return [None] * len(vals)
    lo, hi = min(present), max(present)
    if hi == lo:
        return [None if v is None else 1.0 for v in vals]
    return [None if v is None else (v - lo) / (hi - lo) if higher else (hi - v) / (hi - lo) for v in vals]


def _within_spread(present: list[float], spreads: list[float]) -> bool | None:
    """Whether the runs differ less than their repeats do (None: no repeats to tell)."""
    if not spreads or len(present) < 2:
        return None
    gap = (max(present) - min(present)) / abs(sum(present) / len(present)) if any(present) else 0.0
    return gap <= max(spreads)


def _row(m: MetricDef, runs: list[dict[str, Any]]) -> dict[str, Any]:
    key, base = m.key, runs[0]["values"].get(m.key)
    vals = [r["values"].get(key) for r in runs]
    row: dict[str, Any] = {
        "metric": m.label,
        "key": key,
        "unit": m.unit,
        "higher_is_better": m.better == "higher",
        "values": vals,
        "delta": [None if v is None or base is None else v - base for v in vals],
        "ratio": [None if v is None or not base else v / base for v in vals],
        "normalized": _normalized(vals, m.better == "higher"),
        "missing": [r["name"] for r, v in zip(runs, vals, strict=True) if v is None],
        "why": [(r.get("why") or {}).get(key) if v is None else None for r, v in zip(runs, vals, strict=True)],
        "spread": [_relative_spread((r.get("spread") or {}).get(key), v) for r, v in zip(runs, vals, strict=True)],
    }
    within = _within_spread([v for v in vals if v is not None], [x for x in row["spread"] if x is not None])
    if within is not None:
        row["within_spread"] = within
    return row


def compare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if len(runs) < 2:
        raise CompareError("compare needs at least two runs: effmon compare BASELINE OTHER [...]")
    if runs[0]["values"].get("MCR") is None and "MCR" in {m.key for m in axes()}:
        # the baseline against itself: (bits/bits) x (perf/perf), 1 by definition
        runs[0] = {**runs[0], "values": {**runs[0]["values"], "MCR": 1.0}}
    rows = [_row(m, runs) for m in axes()]
    return {
        "runs": [r["name"] for r in runs],
        "gpus": [r["gpu"] for r in runs],
        "baseline": runs[0]["name"],
        "metrics": rows,
        "normalization": "min-max across the runs; lower-is-better metrics flipped so higher is better",
        "repeats": {r["name"]: r["repeats"] for r in runs if r.get("repeats")},
        "not_ranked": [m["metric"] for m in rows if m.get("within_spread")],
    }


RADAR_FLOOR = 0.2


def radar_png(result: dict[str, Any]) -> bytes:
    import io
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = [m for m in result["metrics"] if any(v is not None for v in m["normalized"])]
    angles = [2 * math.pi * i / len(axes) for i in range(len(axes))]
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="polar")
    for i, name in enumerate(result["runs"]):
        # drawn on RADAR_FLOOR..1: the worst run on an axis sits on the inner ring, never hidden at the centre
        vals = [
            RADAR_FLOOR + (1 - RADAR_FLOOR) * m["normalized"][i] if m["normalized"][i] is not None else 0.0
            for m in axes
        ]
        ax.plot(angles + angles[:1], vals + vals[:1], lw=1.5, label=name)
        ax.fill(angles + angles[:1], vals + vals[:1], alpha=0.12)
    ax.set_xticks(angles)
    ax.set_xticklabels([m["metric"] for m in axes])
    ax.set_ylim(0, 1)
    ax.set_title(
        f"min-max across the runs drawn on {RADAR_FLOOR:g}-1 (inner ring = the worst run on that axis), "
        "higher is better",
        fontsize=8,
    )
    ax.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize=8)
    gaps = [
        f"{name}: {', '.join(m['metric'] for m in axes if m['normalized'][i] is None)}"
        for i, name in enumerate(result["runs"])
        if any(m["normalized"][i] is None for m in axes)
    ]
    if gaps:  # never a silent zero: say which points sit at the centre because the run has no value
        fig.text(0.02, 0.01, "N/A (drawn at the centre) - " + "; ".join(gaps), fontsize=7, color="#57606a")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def cell(v: Any, spec: str = ".4g") -> str:
    return "N/A" if v is None else format(v, spec)


def markdown(result: dict[str, Any], out: Path, force: bool = False) -> Path:
    """The comparison as Markdown (run names literal text) and its radar chart as a PNG beside it."""
    from effmon.core.files import check_target, safe_write
    from effmon.core.fmt import md_text as m

    target = check_target(out, force)[0]
    img = target.with_name(target.stem + "_radar.png")
    runs = [m(r) for r in result["runs"]]
    lines = [
        "# effmon compare",
        "",
        f"Baseline: **{m(result['baseline'])}**. {m(result['normalization'])}.",
        "",
        "| metric | unit | " + " | ".join(runs) + " | " + " | ".join(f"Δ {r}" for r in runs[1:]) + " |",
        "|---|---|" + "---|" * (2 * len(runs) - 1),
    ]
    for row in result["metrics"]:
        lines.append(
            f"| {m(row['metric'])} | {m(row['unit'])} | "
            + " | ".join(cell(v) for v in row["values"])
            + " | "
            + " | ".join(cell(d) for d in row["delta"][1:])
            + " |"
        )
    lines += ["", f"![radar chart]({img.name})", ""]
    safe_write(img, radar_png(result))
    return safe_write(out, "\n".join(lines), force)


def html_doc(result: dict[str, Any], out: Path, force: bool = False) -> Path:
    """The comparison as one self-contained HTML page (every string escaped, control characters visible)."""
    import base64

    from effmon.core.files import check_target, safe_write
    from effmon.core.fmt import html_text as e
    from effmon.report.document import CSS

    check_target(out, force)
    runs = result["runs"]
    head = "".join(f"<th>{e(x)}</th>" for x in ["metric", "unit", *runs, *[f"ratio {r}" for r in runs[1:]]])
    body = "".join(
        "<tr>"
        + f"<td>{e(m['metric'])}</td><td>{e(m['unit'])}</td>"
        + "".join(f"<td class='num'>{cell(v)}</td>" for v in m["values"])
        + "".join(f"<td class='num'>{cell(x, '.3f')}</td>" for x in m["ratio"][1:])
        + "</tr>"
        for m in result["metrics"]
    )
    img = base64.b64encode(radar_png(result)).decode()
    return safe_write(
        out,
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>effmon compare</title>"
        f"<style>{CSS}</style></head><body><h1>effmon compare</h1><p>Baseline: <b>{e(result['baseline'])}"
        f"</b>. {e(result['normalization'])}.</p><table><tr>{head}</tr>{body}</table>"
        f"<h2>Radar</h2><img alt='radar chart' src='data:image/png;base64,{img}'></body></html>",
        force,
    )
