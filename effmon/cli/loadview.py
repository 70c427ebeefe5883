"""The load summary on the terminal (``effmon load``, ``effmon serve --load``): a ``LoadSummary`` in, Rich out. The
figures are computed in ``effmon.serving.load``; this module only lays them out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from effmon.serving.load import LoadSummary

LATENCY_ROWS = (
    ("ttft_s", "TTFT (to first content)"),
    ("itl_s", "ITL (per token)"),
    ("itl_chunk_s", "ITL (per chunk)"),
    ("tpot_s", "TPOT (per token)"),
    ("e2e_s", "E2E"),
)


def _latency_table(s: LoadSummary, marks: dict[str, list[str]]) -> Any:
    from rich.table import Table

    from effmon.serving.load import QUANTILES

    t = Table(
        title=f"effmon load — {s.succeeded} of {s.requests} requests succeeded in {s.wall_s:.1f} s",
        title_justify="left",
    )
    t.add_column("latency")
    for q in QUANTILES:
        t.add_column(q, justify="right")
    for key, label in LATENCY_ROWS:
        values = s.latency[key]
        cells = []
        for q in QUANTILES:
            v = getattr(values, q)
            cells.append("N/A" if v is None else f"{v * 1000:.1f} ms" + ("*" if q in marks.get(key, ()) else ""))
        t.add_row(label, *cells)
    return t


def _throughput_lines(s: LoadSummary) -> list[str]:
    tokens = (
        f"{s.output_token_throughput:.1f} output tokens/s"
        if s.output_token_throughput is not None
        else "output tokens not counted"
    )
    lines = [
        f"throughput over the run's {s.wall_s:.1f} s: {s.request_throughput or 0:.2f} requests/s, {tokens}, "
        f"{s.chunk_throughput or 0:.1f} chunks/s"
    ]
    it, rps = s.figures.get("generated_tokens_per_s"), s.figures.get("requests_per_s")
    if rps is not None:
        gen = f"IT {it:.1f} generated tokens/s, " if it is not None else ""
        lines.append(f"while a request was in flight (as effmon report says): {gen}{rps:.2f} requests/s")
    return lines


def _client_note(client: dict[str, Any]) -> str:
    ms = lambda key: (client.get(key) or 0.0) * 1000  # noqa: E731
    return (
        "* within reach of the client's own delay: its event-loop lag, or (TTFT, E2E) the wait before a "
        "request's headers went out, is over 5% of the figure at that quantile (lag p50 "
        f"{ms('loop_lag_p50_s'):.1f} ms, p99 {ms('loop_lag_p99_s'):.1f} ms; send wait p50 "
        f"{ms('send_delay_p50_s'):.1f} ms, p99 {ms('send_delay_p99_s'):.1f} ms)"
    )


def print_load_summary(s: LoadSummary) -> None:
    from rich.console import Console

    from effmon.serving.load import saturation_warning

    console = Console()
    client = s.client or {}
    marks = client.get("affected") or {}
    console.print(_latency_table(s, marks))
    for line in _throughput_lines(s):
        console.print(line, highlight=False)
    console.print(f"tokens counted from: {s.tokens_counted_from}", highlight=False)
    if s.itl_measured.startswith("per chunk only"):
        console.print(f"ITL: {s.itl_measured}", highlight=False)
    g = s.goodput
    if g.why_not:
        console.print(f"[yellow]goodput: not checked: {g.why_not}[/]", highlight=False)
    elif g.slo_ttft_s is not None or g.slo_tpot_s is not None:
        console.print(f"goodput: {g.requests} requests within the SLO, {g.requests_per_s or 0:.2f}/s")
    if marks:
        console.print(_client_note(client), style="dim", highlight=False)
    if client.get("saturated"):
        console.print(f"[bold yellow]{saturation_warning(client)}[/]", highlight=False)
    if s.errors:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items()))
        console.print(f"[yellow]failed (not in the latency figures): {kinds}[/]", highlight=False)
    if s.cancelled:
        console.print(f"[yellow]cancelled when the load was stopped: {s.cancelled} (not counted as failed)[/]")
