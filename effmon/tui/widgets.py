"""Dashboard widgets, grouped by what they show."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from effmon.core.fmt import GIB, human_energy, visible
from effmon.tui.snapshot import GpuCard, Snapshot


def _na(x: float | None, spec: str, unit: str = "") -> str:
    return "N/A" if x is None else f"{x:{spec}}{unit}"


def bar(frac: float | None, width: int) -> Text:
    if frac is None:
        return Text("N/A".ljust(width), style="dim")
    filled = max(0, min(width, round(frac * width)))
    style = "red" if frac > 0.9 else "yellow" if frac > 0.7 else "green"
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")


class GpuCardWidget(Vertical, can_focus=True):
    """One GPU: memory, compute (GPM SM/tensor activity beside NVML utilisation), power/energy, clocks.

    Focusable, so tab (and a click) moves between GPUs; the focused GPU drives the chart."""

    def on_focus(self) -> None:
        self.app.action_focus_gpu(self.index)  # type: ignore[attr-defined]

    def __init__(self, index: int, **kw: Any):
        super().__init__(id=f"gpu-{index}", classes="gpu-card", **kw)
        self.index = index

    def compose(self) -> ComposeResult:
        yield Static(id=f"gpu-{self.index}-text", classes="gpu-text")
        with Horizontal(classes="spark-row"):
            yield Static("mem", classes="spark-label")
            yield Sparkline([], id=f"gpu-{self.index}-mem", classes="gpu-spark mem-spark")
        with Horizontal(classes="spark-row"):
            yield Static("power", classes="spark-label")
            yield Sparkline([], id=f"gpu-{self.index}-power", classes="gpu-spark power-spark")

    def update_card(self, card: GpuCard, compact: bool) -> None:
        self.set_class(compact, "compact")
        self.set_class(card.stale, "stale")
        short = visible(card.name.replace("NVIDIA ", ""))
        self.border_title = f"GPU {card.index} · {short}" + (" · stale" if card.stale else "")
        used, total = card.mem_used, card.mem_total
        mem_frac = used / total if used is not None and total else None
        mem_text = f"{used / GIB:5.1f}/{total / GIB:.0f} GiB" if used is not None and total else "N/A"
        sm = _na(card.sm_active, ".0f", "%") if card.gpm_supported else "N/A (no GPM)"
        tensor = _na(card.tensor_active, ".0f", "%") if card.gpm_supported else "N/A"
        power = f"{_na(card.power, '.0f')}/{_na(card.power_limit, '.0f')} W"
        throttle = "N/A" if card.throttle is None else ",".join(card.throttle) or "none"  # unknown is not none
        found = self.query(f"#gpu-{self.index}-text")
        if not found:  # mounted, its text not yet (a busy machine): the next refresh draws it
            if self.is_attached:
                self.call_after_refresh(self.update_card, card, compact)
            return
        text = found.first(Static)
        if compact:
            line = Text.assemble(
                (f"{card.index} ", "bold"),
                bar(mem_frac, 6),
                f" {mem_text} ",
                ("SM ", "dim"),
                sm,
                ("·TC ", "dim"),
                tensor,
                ("·util ", "dim"),
                _na(card.util_gpu, ".0f", "%"),
                " ",
                power,
                " ",
                human_energy(card.energy_j),
                " ",
                _na(card.temp, ".0f", "°C"),
            )
            line.truncate(max(20, (self.size.width or 80) - 2), overflow="ellipsis")
            text.update(line)
            return
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(width=7, style="bold")
        grid.add_column(ratio=1)
        grid.add_row("memory", Text.assemble(bar(mem_frac, 16), f" {mem_text}"))
        grid.add_row(
            "compute",
            Text.assemble(
                ("SM active ", "dim"),
                sm,
                ("  tensor ", "dim"),
                tensor,
                ("  NVML util ", "dim"),
                _na(card.util_gpu, ".0f", "%"),
            ),
        )
        grid.add_row("power", Text.assemble(power, ("  energy ", "dim"), human_energy(card.energy_j)))
        grid.add_row(
            "clocks",
            Text.assemble(
                f"SM {_na(card.sm_clock, '.0f')} MHz  ", _na(card.temp, ".0f", "°C"), ("  throttle ", "dim"), throttle
            ),
        )
        text.update(grid)
        for name, data in (("mem", card.mem_series), ("power", card.power_series)):
            for spark in self.query(f"#gpu-{self.index}-{name}").results(Sparkline):  # absent while being mounted
                spark.data = data or [0.0]


def pairs_table(rows: list[tuple[str, str]], hint: str) -> Any:
    if not rows:
        return Text(hint, style="dim")
    t = Table.grid(padding=(0, 1))
    t.add_column(style="dim")
    t.add_column(justify="right")
    for k, v in rows:
        t.add_row(k, v)
    return t


def efficiency_text(snap: Snapshot, width: int = 80) -> Text:
    """The running EfficientLLM figures: every metric declared for the strip, known or always shown."""
    s = snap.efficiency
    if s is None:
        return Text(f"EfficientLLM: {snap.efficiency_error or 'waiting for data'}", style="dim")
    text = Text()
    for m, r in s.metrics("strip"):
        if r.value is None:
            value = "N/A"
        elif callable(m.strip):
            value = m.strip(r.value, s)
        else:
            value = str(m.strip).format(r.value)
        text.append(f"{m.label} ", style="bold")
        text.append(f"{value}  ")
    found = snap.diagnosis
    if found is not None:
        why = Text.assemble(
            (f"{found.fired[0].name}" if found.fired else "why", "bold yellow" if found.fired else "bold"),
            (f" · {found.window}: ", "dim"),
            (found.line, ""),
        )
        why.truncate(max(10, width - 4), overflow="ellipsis")  # one line, whatever the width
        text.append("\n")
        text.append_text(why)
    return text


def chart_renderable(snap: Snapshot) -> Any:
    """The chart's title line: what, in which unit, over which window, and its current, lowest and highest value
    (the sparkline below runs from the lowest to the highest)."""
    c = snap.chart
    scale, unit = (GIB, "GiB") if c["unit"] == "B" else (1.0, c["unit"])

    def f(x: float | None) -> str:
        if x is None:
            return "N/A"
        if unit in ("", "s"):  # loss, learning rate, grad norm, step time: significant digits
            return f"{x / scale:.4g}" + (f" {unit}" if unit else "")
        return f"{x / scale:.1f} {unit}"

    scope = {"gpu": f"GPU {c['gpu']} · ", "step": "training · "}.get(c.get("scope", "gpu"), "")
    title = (f"{scope}{c['label']}" + (f" ({unit})" if unit else ""), "bold")
    if not c["values"]:
        return Text.assemble(title, f"  over {snap.window_label}: N/A, no readings in this window", style="")
    return Text.assemble(
        title,
        f"  over {snap.window_label}   ",
        ("now ", "dim"),
        f(c["last"]),
        ("  min ", "dim"),
        f(c["min"]),
        ("  max ", "dim"),
        f(c["max"]),
        (f"   {c['extra']}" if c.get("extra") else "", "dim"),
    )


def chart_axis(snap: Snapshot, width: int) -> Text:
    """The time axis under the sparkline: the window's start on the left, the cursor on the right."""
    from effmon.core.fmt import human_duration

    start = snap.chart.get("start", snap.t)
    if snap.state == "recording":  # live: how far back, up to now
        left, right = f"−{human_duration(snap.t - start)}", "now"
    else:  # a recorded session: times from its start
        left = f"t+{human_duration(start - snap.session_start)}"
        right = f"t+{human_duration(snap.t - snap.session_start)}"
    fill = max(1, width - len(left) - len(right) - 2)
    return Text(f"{left} {'─' * fill} {right}", style="dim")
