"""The live dashboard. Build it with ``make_app``: the CLI, tests, snapshots and screenshots share it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import ContentSwitcher, DataTable, Footer, Input, Sparkline, Static

from effmon.core.fmt import human_bytes, human_duration, visible
from effmon.core.procs import Interrupts
from effmon.tui.snapshot import WINDOWS, SessionView, Snapshot
from effmon.tui.widgets import GpuCardWidget, chart_axis, chart_renderable, efficiency_text, pairs_table

if TYPE_CHECKING:
    from effmon.tui.fleet import FleetApp

HELP = """\
[b]Keys[/b]  (htop/nvitop habits where they exist)
  q         quit (the session is flushed and kept)
  p         pause / resume the display (replay: pause / play)
  ?         this help, with the state of every data source
  g, 0-9    focus the next GPU / GPU n (the chart follows it)
  tab       move focus between the GPU cards and the process table (mouse: click)
  ↑ ↓       move in the process table
  c         switch between the process table and the chart
  m         chart: next metric
  w         time window: 1 min / 10 min / 1 h / whole session
  /         filter processes (Enter to apply, Esc to clear)
  r         write a report of the session so far (EfficientLLM JSON)
[b]Replay[/b]
  space     pause / play      ← →   step 5 s back / forward
  home/end  jump to start / end       s   speed ×1 / ×10
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "close")]

    def __init__(self, sources: list[dict[str, Any]], notices: list[str]):
        super().__init__()
        self.sources = sources
        self.notices = notices

    def compose(self) -> ComposeResult:
        body = Text.from_markup(HELP)
        body.append("\n")
        body.append("Data sources\n", style="bold")
        if not self.sources:
            body.append("  (none reported yet)\n")
        for src in self.sources:
            state = src.get("state", "?")
            colour = {"ok": "green", "failed": "red", "slow": "yellow"}.get(state, "dim")
            body.append(f"  {visible(src['source'])}.{visible(src['channel'])}: ")
            body.append(state, style=colour)
            body.append(f" every {src['interval_s']:g} s, {src['reads']} reads, {src['failures']} failures")
            if src.get("last_error"):
                body.append(f" — {visible(src['last_error'])}")
            body.append("\n")
        for n in self.notices[-5:]:
            body.append(f"  {visible(n)}\n", style="yellow")
        yield VerticalScroll(Static(body), id="help-body")


class EffmonApp(App[None]):
    CSS_PATH = "effmon.tcss"
    TITLE = "effmon"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("p", "pause", "pause"),
        Binding("question_mark", "help", "help"),
        Binding("g", "next_gpu", "GPU"),
        Binding("w", "window", "window"),
        Binding("c", "chart", "chart"),
        Binding("m", "metric", "metric", show=False),
        Binding("slash", "filter", "filter"),
        Binding("r", "report", "report"),
        Binding("space", "pause", "play/pause", show=False),
        Binding("left", "step(-5)", "-5 s", show=False, priority=True),
        Binding("right", "step(5)", "+5 s", show=False, priority=True),
        Binding("home", "jump('start')", "start", show=False, priority=True),
        Binding("end", "jump('end')", "end", show=False, priority=True),
        Binding("s", "speed", "speed", show=False),
        *[Binding(str(i), f"focus_gpu({i})", show=False) for i in range(10)],
    ]

    def __init__(
        self,
        view: SessionView,
        *,
        mode: str = "live",
        refresh_s: float = 1.0,
        cursor: float | None = None,
        sync: bool = False,
        paused: bool = False,
        speed: float = 1.0,
        on_quit: Callable[[], None] | None = None,
        report_dir: Path | None = None,
        follow: Callable[[], bool] | None = None,
    ):
        super().__init__()
        self.view = view
        self.mode = mode
        self.refresh_s = refresh_s
        self.sync = sync
        self.paused = paused
        self.speed = speed
        self.on_quit = on_quit
        self.report_dir = report_dir
        self.follow = follow
        lo, hi = view.time_range()
        self.cursor: float | None = cursor if cursor is not None else (lo if mode == "replay" else None)
        self.window_index = 1
        self.chart_metric = 0
        self.focus_gpu = 0
        self.proc_filter = ""
        self.snap: Snapshot | None = None
        self._cards: dict[int, GpuCardWidget] = {}
        self._building = False
        self._again = False
        self._compact = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_requested = False

    # -- layout --------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield Vertical(id="gpus")
        with Horizontal(id="panels"):
            yield Static(id="throughput", classes="panel")
            yield Static(id="latency", classes="panel")
        yield Static(id="efficiency")
        with ContentSwitcher(initial="procs", id="lower"):
            yield DataTable(id="procs", cursor_type="row", zebra_stripes=False)
            with Vertical(id="chart"):
                yield Static(id="chart-label")
                yield Sparkline([], id="chart-spark")
                yield Static(id="chart-axis")
        yield Input(
            placeholder="filter processes by pid, user or command; Enter to apply, Esc to clear",
            id="filter",
            disabled=True,
        )
        yield Static(id="ended")
        yield Footer()

    def on_mount(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.stop_requested:  # a stop came while the dashboard was starting
            self.exit()
        self.query_one("#throughput", Static).border_title = "throughput"
        self.query_one("#latency", Static).border_title = "latency"
        self.query_one("#efficiency", Static).border_title = "EfficientLLM so far"
        self.query_one("#chart", Vertical).border_subtitle = "m metric · w window · g/0-9 GPU · c back"
        table = self.query_one("#procs", DataTable)
        table.add_columns("PID", "user", "GPU", "GPU mem", "SM %", "CPU %", "RSS", "command")
        table.focus()
        self.refresh_data()
        self.set_interval(self.refresh_s, self.tick)

    # -- data ------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.paused:
            return
        if self.mode == "replay" and self.cursor is not None:
            lo, hi = self.view.time_range()
            if hi is not None:
                self.cursor = min(hi, self.cursor + self.refresh_s * self.speed)
        self.refresh_data()

    def _build(self) -> Snapshot:
        seconds, label = WINDOWS[self.window_index]
        width = max(20, (self.size.width or 80) - 4)
        return self.view.snapshot(
            self.cursor,
            seconds,
            label,
            self.chart_metric,
            self.focus_gpu,
            self.proc_filter,
            live=self.mode == "live",
            chart_width=width,
            throttle=not self.paused and not self.sync,
            sparklines=not self._compact,
        )

    def refresh_data(self) -> None:
        if self.sync:
            self.apply(self._build())
        elif self._building:
            self._again = True  # one build at a time; the latest request runs when it ends
        else:
            self._building = True
            self._build_in_thread()

    @work(thread=True, group="refresh")
    def _build_in_thread(self) -> None:
        try:
            snap = self._build()
        except Exception as exc:  # never a traceback on screen: a notice instead
            self.call_from_thread(
                self.notify, visible(f"could not read the session: {exc}"), severity="error", markup=False
            )
            snap = None
        self.call_from_thread(self._built, snap)

    def _built(self, snap: Snapshot | None) -> None:
        self._building = False
        if snap is not None:
            self.apply(snap)
        if self._again:
            self._again = False
            self.refresh_data()

    def apply(self, snap: Snapshot) -> None:
        self.snap = snap
        self._render_header(snap)
        self._render_gpus(snap)
        self.query_one("#throughput", Static).update(
            pairs_table(snap.throughput, "no step or request data yet: it comes from the training/serving integrations")
        )
        latency = self.query_one("#latency", Static)
        latency.border_title = f"latency · {snap.window_label}"  # its percentiles are over the view's window
        latency.update(pairs_table(snap.latency, "no steps or requests yet"))
        self.query_one("#efficiency", Static).update(efficiency_text(snap, self.size.width or 80))
        self._render_procs(snap)
        self.query_one("#chart-label", Static).update(chart_renderable(snap))
        spark = self.query_one("#chart-spark", Sparkline)
        spark.display = bool(snap.chart["values"])  # no readings: say so, never draw N/A as bars
        spark.data = snap.chart["values"] or [0.0]
        self.query_one("#chart-axis", Static).update(chart_axis(snap, max(20, (self.size.width or 80) - 4)))

    def _render_header(self, snap: Snapshot) -> None:
        """Name, state and, for a fine-tune, how far it has gone and how long it has left (the first things cut
        at 80 columns are the window and the host)."""
        rel = snap.t - snap.session_start
        state = "● recording" if snap.state == "recording" else snap.state
        if snap.state != "recording" and snap.exit_code is not None:
            state += f" (exit {snap.exit_code})"
        if self.mode == "replay":
            state = f"replay ×{self.speed:g}"
        if self.paused:
            state += " ‖ paused"
        done = snap.progress
        if done is None:
            where = f" · t+{human_duration(rel)}"
        else:
            where = " · " + " · ".join(p for p in (done.count_text(), done.left_text(), done.epoch_text()) if p)
            where += f" · t+{human_duration(rel)}"
        text = Text.assemble(
            *[(f"⚠ {visible(alert)} ", "bold white on red") for alert in snap.alerts],
            (visible(snap.name), "bold"),
            " · ",
            (state, "bold"),
            where,
            f" · window {snap.window_label} · {visible(snap.host)}",
        )
        text.truncate(max(10, (self.size.width or 80) - 2), overflow="ellipsis")
        self.query_one("#header", Static).update(text)
        self._render_end(snap)

    def _render_end(self, snap: Snapshot) -> None:
        """Once a watched run has ended: one calm line that says how, what it did, and what to do next. The
        panels keep the run's final figures (they are read up to its last reading)."""
        ended = self.query_one("#ended", Static)
        if self.mode != "live" or snap.state in ("recording", "unknown"):
            ended.display = False
            return
        self.query_one("#efficiency", Static).border_title = "EfficientLLM"  # the whole run now, not "so far"
        mark, style = ("✓", "bold green") if snap.state == "complete" else ("■", "bold yellow")
        if snap.state == "failed":
            mark, style = "✗", "bold red"
        what = f" · {snap.progress.count_text()}" if snap.progress is not None else ""
        reason = f": {snap.end_reason}" if snap.end_reason and snap.state != "complete" else ""
        ended.update(
            Text.assemble(
                (f"{mark} {snap.state}", style),
                (f" (exit {snap.exit_code})" if snap.exit_code is not None else ""),
                visible(reason),
                f" after {human_duration(snap.session_end - snap.session_start)}{what}",
                ("  ·  r report · q quit · later: ", "dim"),
                (f"effmon sessions show {visible(snap.name)}", "dim"),
            )
        )
        ended.display = True

    def _render_gpus(self, snap: Snapshot) -> None:
        box = self.query_one("#gpus", Vertical)
        if not snap.gpus:
            if not self._cards:
                if not box.children:
                    box.mount(Static(id="nogpu"))
                notice = next((n for n in snap.notices if "NVIDIA" in n or "GPU" in n), "no GPU in this session")
                hint = "" if "effmon demo" in notice else "\nTo see effmon on a recorded H100, run: effmon demo"
                self.query_one("#nogpu", Static).update(
                    Text.assemble(
                        ("No GPU: ", "bold"),
                        visible(notice),
                        "\n",
                        snap.host_line or "host metrics pending",
                        (hint, "dim"),
                    )
                )
            return
        for card in snap.gpus:
            if card.index not in self._cards:
                widget = GpuCardWidget(card.index)
                self._cards[card.index] = widget
                box.mount(widget)
        height = self.size.height or 24
        panel_rows = 2 + max(len(snap.throughput), len(snap.latency), 1)
        available = height - 2 - panel_rows - 4 - 5  # header, footer, panels, efficiency, >= 5 rows below
        per_card = 8 if height > 32 else 6
        columns = 2 if (self.size.width or 80) >= 160 and len(snap.gpus) > 1 else 1
        compact = -(-len(snap.gpus) // columns) * per_card > available
        box.styles.grid_size_columns = 1 if compact else columns
        self._compact = compact
        for card in snap.gpus:
            widget = self._cards[card.index]
            widget.set_class(height <= 32, "no-spark")
            if widget.is_mounted:
                widget.update_card(card, compact)
                widget.set_class(card.index == self.focus_gpu and len(snap.gpus) > 1, "focused")
            else:
                self.call_after_refresh(widget.update_card, card, compact)

    def _render_procs(self, snap: Snapshot) -> None:
        table = self.query_one("#procs", DataTable)
        table.clear()
        watched = set(snap.watched_pids)
        for p in snap.processes:
            style = "bold reverse" if p["pid"] in watched else ""
            cells = [
                str(p["pid"]),
                visible(p["user"] or ""),
                "" if p["gpu"] is None else str(p["gpu"]),
                human_bytes(p["gpu_mem"]) if p["gpu_mem"] is not None else "",
                "" if p["sm"] is None else f"{p['sm']:.0f}",
                "" if p["cpu"] is None else f"{p['cpu']:.0f}",
                human_bytes(p["rss"]) if p["rss"] is not None else "",
                visible(p["command"] or "")[:200],
            ]
            table.add_row(*[Text(c, style=style) for c in cells])
        if not snap.processes:
            msg = (
                f"no process matches '{self.proc_filter}'"
                if self.proc_filter
                else "no per-process data in this session"
            )
            table.add_row(*[""] * 7, Text(msg, style="dim"))

    # -- actions ---------------------------------------------------------------------------
    def action_pause(self) -> None:
        self.paused = not self.paused
        if self.snap:
            self._render_header(self.snap)

    def action_help(self) -> None:
        snap = self.snap
        self.push_screen(HelpScreen(snap.sources if snap else [], snap.notices if snap else []))

    def action_next_gpu(self) -> None:
        n = len(self.snap.gpus) if self.snap and self.snap.gpus else 1
        self.action_focus_gpu((self.focus_gpu + 1) % n)

    def action_focus_gpu(self, index: int) -> None:
        if self.snap and self.snap.gpus and index < len(self.snap.gpus):
            self.focus_gpu = index
            self.refresh_data()
        else:
            self.notify(f"there is no GPU {index}", severity="warning")

    def action_window(self) -> None:
        self.window_index = (self.window_index + 1) % len(WINDOWS)
        self.refresh_data()

    def action_chart(self) -> None:
        switcher = self.query_one("#lower", ContentSwitcher)
        switcher.current = "chart" if switcher.current == "procs" else "procs"

    def action_metric(self) -> None:
        count = self.snap.chart.get("count", 1) if self.snap is not None else 1
        self.chart_metric = (self.chart_metric + 1) % max(1, count)
        self.query_one("#lower", ContentSwitcher).current = "chart"
        self.refresh_data()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.disabled = False
        box.add_class("visible")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.proc_filter = event.value.strip()
        event.input.remove_class("visible")
        event.input.disabled = True
        self.query_one("#procs", DataTable).focus()
        self.refresh_data()

    def on_key(self, event: Any) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_class("visible"):
            box.value = ""
            box.remove_class("visible")
            box.disabled = True
            self.query_one("#procs", DataTable).focus()
            self.proc_filter = ""
            self.refresh_data()
            event.stop()

    def action_step(self, seconds: float) -> None:
        if self.mode != "replay" or self.cursor is None:
            self.notify("stepping works in replay mode (effmon replay SESSION)", severity="warning")
            return
        lo, hi = self.view.time_range()
        self.cursor = min(max(self.cursor + seconds, lo or self.cursor), hi or self.cursor)
        self.refresh_data()

    def action_jump(self, where: str) -> None:
        if self.mode != "replay":
            return
        lo, hi = self.view.time_range()
        self.cursor = lo if where == "start" else hi
        self.refresh_data()

    def action_speed(self) -> None:
        self.speed = 10.0 if self.speed == 1.0 else 1.0
        if self.snap:
            self._render_header(self.snap)

    def action_report(self) -> None:
        self._write_report()

    @work(thread=True, group="report")
    def _write_report(self) -> None:
        """The report of the session so far: the same code as `effmon report` (HTML and EfficientLLM JSON)."""
        import json

        from effmon.core.files import UnsafePath, private_dir, safe_write
        from effmon.core.store import SessionReader
        from effmon.metrics import ExactAggregation, MetricsError, Window, evaluate
        from effmon.report.formats import efficientllm

        try:
            with SessionReader(self.view.path) as reader:
                lo, hi = reader.time_range()
                if lo is None or hi is None:
                    raise MetricsError("the session holds no samples yet")
                end = min(self.cursor, hi) if self.cursor is not None else hi
                agg = ExactAggregation(reader)
                summary = evaluate(reader, Window(lo, end, "so far", lo, hi), aggregation=agg)
                out_dir = private_dir(self.report_dir or self.view.path.parent.parent / "reports")
                stem = out_dir / f"{self.view.path.stem}-{time.strftime('%H%M%S')}"
                safe_write(f"{stem}.efficientllm.json", json.dumps(efficientllm(summary)) + "\n")
                html_note = ""
                try:
                    from effmon.report.document import write

                    write(agg, summary, "html", Path(f"{stem}.html"))
                except ImportError:
                    html_note = " (no HTML: pip install 'effmon[report]' for plots)"
            self.call_from_thread(
                self.notify, visible(f"report written: {stem}.html / .efficientllm.json{html_note}"), markup=False
            )
        except (MetricsError, OSError, UnsafePath) as exc:
            self.call_from_thread(self.notify, visible(f"no report: {exc}"), severity="error", markup=False)

    async def action_quit(self) -> None:
        if self.on_quit:
            self.on_quit()
        self.exit()

    def on_unmount(self) -> None:
        self.view.close()


def make_app(session: Path | str, *, mode: str = "live", **kw: Any) -> EffmonApp:
    return EffmonApp(SessionView(session), mode=mode, **kw)


def run_dashboard(app: EffmonApp | FleetApp, interrupts: Interrupts | None = None) -> None:
    """Run the dashboard until q, or until a stop request (SIGTERM, SIGHUP, a SIGINT sent to effmon) closes it
    the way q does: the terminal is restored and the caller records the session's end. ``interrupts``: the
    recording's, so the same request also stops what is recorded."""

    def close(signum: int) -> None:
        app.stop_requested = True
        if app.loop is not None:
            app.loop.call_soon_threadsafe(app.exit)

    with interrupts or Interrupts() as intr:
        intr.callbacks.append(close)
        try:
            app.run()
        finally:
            intr.callbacks.remove(close)
