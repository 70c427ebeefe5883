"""The fleet view: every host and GPU a Prometheus server knows (``effmon top --prometheus URL``).

One row per host with its figures over the window (AEC, AMU, PCU from the same metric registry as reports) and its
newest readings; the whole job's EfficientLLM strip above; Enter opens a host as GPU cards, the single-machine
dashboard's own widgets. Data comes from ``effmon.report.fleet`` on a worker thread, never on the UI's loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from effmon.core.fmt import human_duration, visible
from effmon.report.fleet import (
    POWER,
    SM,
    TENSOR,
    USED,
    UTIL,
    Fleet,
    FleetGpu,
    FleetHost,
    PrometheusError,
    fleet_snapshot,
    strip_text,
)
from effmon.sources.dcgm import FREE_FIELD, MIB
from effmon.tui.snapshot import GpuCard
from effmon.tui.widgets import GpuCardWidget

WINDOWS = (60.0, 300.0, 900.0, 3600.0)
BLOCKS = "▁▂▃▄▅▆▇█"
COLUMNS = ("host", "GPUs", "W now", "AEC W", "AMU GiB", "PCU", "util", "°C", "power over the window")
FLEET_CSS = """
#fleet-strip { height: auto; border: round $panel-lighten-2; border-title-color: $accent; padding: 0 1; }
#hosts { height: 1fr; }
#host-gpus { height: 1fr; }
"""


def spark_text(values: list[float], width: int = 16) -> str:
    """A one-line sparkline of the series, resampled to ``width`` characters (lowest to highest)."""
    if not values:
        return "no readings"
    step = len(values) / width
    points = [values[min(len(values) - 1, int(i * step))] for i in range(min(width, len(values)))]
    lo, hi = min(points), max(points)
    span = (hi - lo) or 1.0
    return "".join(BLOCKS[round((v - lo) / span * (len(BLOCKS) - 1))] for v in points)


def strip_line(title: str, results: dict[str, Any]) -> Text:
    text = Text(f"{title}  ", style="dim")
    for label, value in strip_text(results):
        text.append(f"{label} ", style="bold")
        text.append(f"{value}  ")
    return text


def card_of(g: FleetGpu, position: int) -> GpuCard:
    """A fleet GPU as the single-machine dashboard's card (dcgm-exporter units into effmon's)."""
    now = g.now
    used, free = now.get(USED), now.get(FREE_FIELD)
    return GpuCard(
        index=int(g.gpu) if g.gpu.isdigit() else position,
        name=g.name,
        mem_used=used * MIB if used is not None else None,
        mem_total=(used + free) * MIB if used is not None and free is not None else None,
        util_gpu=now.get(UTIL),
        sm_active=now[SM] * 100 if SM in now else None,
        tensor_active=now[TENSOR] * 100 if TENSOR in now else None,
        power=now.get(POWER),
        power_limit=now.get("DCGM_FI_DEV_POWER_MGMT_LIMIT"),
        energy_j=g.energy_j,
        sm_clock=now.get("DCGM_FI_DEV_SM_CLOCK"),
        temp=now.get("DCGM_FI_DEV_GPU_TEMP"),
        mem_series=g.mem_series,
        power_series=g.power_series,
        stale=not g.current,
        gpm_supported=SM in now or TENSOR in now,
    )


def host_row(h: FleetHost) -> tuple[Any, ...]:
    r = h.results

    def fmt(key: str, spec: str) -> str:
        value = r[key].value
        return "N/A" if value is None else f"{value:{spec}}"

    powers, utils, temps = h.now(POWER), h.now(UTIL), h.now("DCGM_FI_DEV_GPU_TEMP")
    power = sum(powers) if powers else None
    util = sum(utils) / len(utils) if utils else None
    temp = max(temps) if temps else None
    name = Text(visible(h.name), style="" if h.current else "yellow")
    if not h.current:
        name.append(" (no reading now)", style="yellow")
    return (
        name,
        str(len(h.gpus)),
        "N/A" if power is None else f"{power:.0f}",
        fmt("AEC", ".0f"),
        fmt("AMU", ".1f"),
        fmt("PCU", ".3f"),
        "N/A" if util is None else f"{util:.0f}%",
        "N/A" if temp is None else f"{temp:.0f}",
        spark_text(h.power_series()),
    )


class HostTable(DataTable[Any]):
    """The hosts, one row each; Enter opens the one under the cursor (and the footer says so)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "open host")]


class HostScreen(Screen[None]):
    """One host of the fleet, drawn with the single-machine dashboard's GPU cards."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "back"), Binding("q", "back", "back")]

    def __init__(self, host: str):
        super().__init__()
        self.host = host
        self._cards: dict[int, GpuCardWidget] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield VerticalScroll(id="host-gpus")
        yield Static(id="efficiency")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#efficiency", Static).border_title = "EfficientLLM, this host"
        fleet = getattr(self.app, "fleet", None)
        if fleet is not None:
            self.show(fleet)

    def action_back(self) -> None:
        self.app.pop_screen()

    def show(self, fleet: Fleet) -> None:
        host = next((h for h in fleet.hosts if h.name == self.host), None)
        header = self.query_one("#header", Static)
        if host is None:
            header.update(f"{visible(self.host)}: no longer in the server's answer (esc: back to the fleet)")
            return
        gpus = f"{len(host.gpus)} GPU" + ("s" if len(host.gpus) != 1 else "")
        header.update(f"{visible(host.name)} · {gpus} · {window_words(fleet)} · esc: back")
        box = self.query_one("#host-gpus", VerticalScroll)
        height = self.app.size.height or 24
        # as the dashboard decides: full cards while they fit (with sparklines above 32 rows), else a line each
        compact = len(host.gpus) * (8 if height > 32 else 6) > height - 5
        for i, g in enumerate(host.gpus):
            card = card_of(g, i)
            if card.index not in self._cards:
                self._cards[card.index] = GpuCardWidget(card.index)
                box.mount(self._cards[card.index])
            widget = self._cards[card.index]
            widget.set_class(height <= 32, "no-spark")
            if widget.is_mounted:
                widget.update_card(card, compact)
            else:
                self.call_after_refresh(widget.update_card, card, compact)
        self.query_one("#efficiency", Static).update(strip_line(f"over {window_words(fleet)}", host.results))


def window_words(fleet: Fleet) -> str:
    return (
        f"the last {human_duration(fleet.window_s)}"
        if abs(fleet.end - time.time()) < 60
        else f"{time.strftime('%H:%M:%S', time.localtime(fleet.start))}–"
        f"{time.strftime('%H:%M:%S', time.localtime(fleet.end))}"
    )


class FleetApp(App[None]):
    CSS_PATH = "effmon.tcss"
    CSS = FLEET_CSS
    TITLE = "effmon fleet"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("w", "window", "window"),
        Binding("r", "refresh", "refresh"),
    ]

    def __init__(
        self,
        url: str,
        match: str = "",
        *,
        window_s: float = 300.0,
        fixed: tuple[float, float] | None = None,
        refresh_s: float = 5.0,
        first: Fleet | None = None,
    ):
        super().__init__()
        self.url, self.match, self.window_s, self.fixed, self.refresh_s = url, match, window_s, fixed, refresh_s
        self.fleet: Fleet | None = first
        self.error: str | None = None
        self._busy = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_requested = False  # run_dashboard's stop request (SIGTERM, SIGHUP) before the loop ran

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield Static(id="fleet-strip")
        with Vertical():
            yield HostTable(id="hosts", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.stop_requested:
            self.exit()
        self.query_one("#fleet-strip", Static).border_title = "EfficientLLM, whole job"
        table = self.query_one("#hosts", DataTable)
        table.add_columns(*COLUMNS)
        table.focus()
        if self.fleet is not None:
            self.apply(self.fleet)
        else:
            self.action_refresh()
        if self.fixed is None:
            self.set_interval(self.refresh_s, self.action_refresh)

    # -- data ------------------------------------------------------------------------------
    def window(self) -> tuple[float, float]:
        if self.fixed is not None:
            return self.fixed
        now = time.time()
        return now - self.window_s, now

    def action_refresh(self) -> None:
        if not self._busy:
            self._busy = True
            self._load()

    @work(thread=True, group="fleet")
    def _load(self) -> None:
        start, end = self.window()
        try:
            fleet, error = fleet_snapshot(self.url, self.match, start, end), None
        except PrometheusError as exc:  # what failed, without the hint for a first start (it worked before)
            fleet, error = None, str(exc).partition("; is a Prometheus server there?")[0]
        except Exception as exc:  # never a traceback on screen: the header says it and the view keeps its data
            fleet, error = None, f"{type(exc).__name__}: {exc}"
        self.call_from_thread(self._loaded, fleet, error)

    def _loaded(self, fleet: Fleet | None, error: str | None) -> None:
        self._busy = False
        self.error = error
        if fleet is not None:
            self.apply(fleet)
        else:
            self._render_header()

    def apply(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._render_header()
        self.query_one("#fleet-strip", Static).update(
            strip_line(f"{fleet.gpus} GPUs on {len(fleet.hosts)} hosts, {window_words(fleet)}", fleet.results)
        )
        table = self.query_one("#hosts", DataTable)
        row = table.cursor_row
        table.clear()
        for h in fleet.hosts:
            table.add_row(*host_row(h), key=h.name)
        if fleet.hosts:
            table.move_cursor(row=min(row, len(fleet.hosts) - 1))
        if isinstance(self.screen, HostScreen):
            self.screen.show(fleet)

    def _render_header(self) -> None:
        header = self.query_one("#header", Static)
        text = Text()
        if self.error:  # first, so an 80-column terminal shows it
            text.append(f"Prometheus: {visible(self.error)}", style="bold red")
            if self.fixed is None:
                text.append(f" (retrying every {self.refresh_s:g} s)", style="red")
            text.append(" · ")
        text.append(f"effmon fleet · {visible(self.url)}")
        if self.match:
            text.append(f" · {visible(self.match)}")
        if self.fleet is not None:
            f = self.fleet
            text.append(f" · {f.gpus} GPUs, {len(f.hosts)} hosts · {f.queries} queries, {f.took_s * 1000:.0f} ms")
            if self.fixed is None:
                text.append(f" at {time.strftime('%H:%M:%S', time.localtime(f.end))}")
        text.no_wrap, text.overflow = True, "ellipsis"
        header.update(text)

    # -- keys ------------------------------------------------------------------------------
    def action_open(self) -> None:
        table = self.query_one("#hosts", DataTable)
        if self.fleet is None or not self.fleet.hosts or isinstance(self.screen, HostScreen):
            return
        host = self.fleet.hosts[min(table.cursor_row, len(self.fleet.hosts) - 1)]
        self.push_screen(HostScreen(host.name))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_window(self) -> None:
        if self.fixed is not None:
            self.notify("a fixed --range: the window does not change", timeout=3)
            return
        i = WINDOWS.index(self.window_s) if self.window_s in WINDOWS else -1
        self.window_s = WINDOWS[(i + 1) % len(WINDOWS)]
        self.notify(f"window: the last {human_duration(self.window_s)}", timeout=2)
        self.action_refresh()

    def action_focus_gpu(self, index: int) -> None:
        """A GPU card took focus (the cards call this on the dashboard; the fleet has no chart to drive)."""
