"""``effmon sweep``: an energy study of a server over a grid of input length x output length x concurrency (and
task prompt sets), recorded as one session.

The server is first watched idle (the ``idle`` phase: the static power every cell pays), then each cell runs as a
phase of the session (``in64-out16-c1``, ``qa-out64-c4`` ...): rounds of the cell's load until its output
tokens/s agree within ``spread`` over the last three rounds, or ``max_rounds``, or the cell's time ``budget``. A
request row carries its cell; the cell's energy, power, clocks and latencies are then read from the session like
any report window (``effmon.report.sweep``), never from the client's clock alone.

No GPU setting is touched unless ``sm_clocks`` / ``power_limits`` ask for it (``effmon.core.gpuctl``: checked
first, recorded, put back on every exit path); otherwise clocks and power limits are the GPU's own, as recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from effmon.core.declare import Row
from effmon.serving.load import (
    LoadConfig,
    RequestResult,
    jsonl_prompts,
    request_row,
    run_load,
    summarize,
    token_counter,
)

TASKS = ("generation", "qa", "summarisation")
"""The task prompt sets shipped in effmon/data/prompts (offline; their token counts come from the server)."""


class SweepError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Cell:
    input_tokens: int | None
    """Synthetic prompts of this many tokens; None for a task's own prompts."""
    output_tokens: int
    concurrency: int
    task: str | None = None
    sm_clock: int | None = None
    """The SM clock locked for this cell (--sm-clocks); None: the GPU's own choice."""
    power_limit: float | None = None
    """The power limit set for this cell (--power-limits); None: as the GPU has it."""

    @property
    def setting(self) -> str:
        """The GPU setting's part of the name ('' when the GPU chose): -sm1410, -pl500, -sm1410-pl500."""
        return (f"-sm{self.sm_clock}" if self.sm_clock else "") + (
            f"-pl{self.power_limit:g}" if self.power_limit else ""
        )

    @property
    def name(self) -> str:
        head = self.task if self.task else f"in{self.input_tokens}"
        return f"{head}-out{self.output_tokens}-c{self.concurrency}{self.setting}"

    @property
    def idle_phase(self) -> str:
        """The idle phase whose power is this cell's static power: at the cell's own GPU setting."""
        return "idle" + self.setting


@dataclass
class SweepConfig:
    base: LoadConfig
    inputs: list[int] = field(default_factory=lambda: [128])
    outputs: list[int] = field(default_factory=lambda: [64])
    concurrency: list[int] = field(default_factory=lambda: [1])
    tasks: dict[str, list[str]] = field(default_factory=dict)
    """Task name -> its prompts; when given, the tasks take the place of the input-length axis."""
    requests: int = 16
    """Requests per round."""
    spread: float = 0.05
    """A cell is stable when its last three rounds' output tokens/s are within this share of their mean."""
    min_rounds: int = 3
    max_rounds: int = 6
    budget_s: float = 120.0
    """A cell ends after this long even if not stable (it says so)."""
    idle_s: float = 10.0
    sm_clocks: list[int] = field(default_factory=list)
    """Lock the SM clock at each of these for every cell (only when given: effmon changes nothing otherwise)."""
    power_limits: list[float] = field(default_factory=list)

    def cells(self) -> list[Cell]:
        """Every cell, grouped by GPU setting (each setting changed once)."""
        heads: list[tuple[int | None, str | None]] = (
            [(None, t) for t in self.tasks] if self.tasks else [(n, None) for n in self.inputs]
        )
        sms: list[int | None] = [*self.sm_clocks] or [None]
        pls: list[float | None] = [*self.power_limits] or [None]
        settings = [(sm, pl) for sm in sms for pl in pls]
        return [
            Cell(i, o, c, t, sm, pl)
            for (sm, pl) in settings for (i, t) in heads for o in self.outputs for c in self.concurrency
        ]  # fmt: skip

    @property
    def changes_gpu(self) -> bool:
        return bool(self.sm_clocks or self.power_limits)


def load_task(name: str) -> list[str]:
    """A shipped task (generation, qa, summarisation) or a file of prompts: JSON lines as for load --prompts, or
    plain text with one prompt per paragraph (a blank line between)."""
    if name in TASKS:
        text = (resources.files("effmon") / "data" / "prompts" / f"{name}.jsonl").read_text(encoding="utf-8")
        return _prompts(text, name)
    path = Path(name)
    if not path.is_file():
        raise SweepError(f"--tasks {name!r}: not a shipped task ({', '.join(TASKS)}) nor a file of prompts")
    return _prompts(path.read_text(encoding="utf-8", errors="replace"), name)


def _prompts(text: str, name: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and all(line.lstrip().startswith("{") for line in lines):  # the same JSON lines as load --prompts
        try:
            prompts = jsonl_prompts(text, f"--tasks {name}")
        except ValueError as exc:
            raise SweepError(str(exc)) from None
    else:
        prompts = [p.strip() for p in text.split("\n\n") if p.strip()]
    if not prompts:
        raise SweepError(f"--tasks {name}: no prompts in it")
    return prompts


def spread_of(values: list[float]) -> float | None:
    """(max - min) / mean of the values; None for fewer than two or a zero mean."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (max(values) - min(values)) / mean if mean else None


def _wait(seconds: float, stop: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not stop() and time.monotonic() < end:
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))


def run_sweep(
    rec: Any, sweep: SweepConfig, stop: Callable[[], bool], say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Run the idle baseline and every cell into the open Recording ``rec``; returns what each cell did (also in
    the session's meta, ``sweep``), as far as it got when ``stop()`` turned true."""
    cells = sweep.cells()
    counter = token_counter(sweep.base)  # where the server sends no usage: its tokenizer, or its /tokenize
    plan = {"inputs": sweep.inputs if not sweep.tasks else None, "outputs": sweep.outputs,
            "concurrency": sweep.concurrency, "tasks": list(sweep.tasks) or None, "requests": sweep.requests,
            "spread": sweep.spread, "max_rounds": sweep.max_rounds, "budget_s": sweep.budget_s,
            "idle_s": sweep.idle_s, "sm_clocks": sweep.sm_clocks or None,
            "power_limits_w": sweep.power_limits or None}  # fmt: skip
    state: dict[str, Any] = {"plan": plan, "cells": []}  # the session's meta "sweep", written as it grows
    rec.set_meta(sweep=state)
    with _gpu_settings(rec, sweep) as gpu:  # checked before the idle wait; nothing changes until the first cell
        say(f"effmon sweep: {len(cells)} cells; first {sweep.idle_s:g} s idle (the static power every cell pays)")
        state["idle"] = _idle(rec, "idle", sweep.idle_s, stop)
        rec.set_meta(sweep=state)
        _cells(rec, sweep, cells, stop, say, counter, gpu, state)
    return list(state["cells"])


def _idle(rec: Any, name: str, seconds: float, stop: Callable[[], bool]) -> dict[str, float]:
    """An idle phase: the server up, no request in flight (its power is the static power of the cells after it)."""
    t_start = time.time()
    _wait(seconds, stop)
    phase = {"t_start": t_start, "t_end": time.time()}
    rec.add([Row("phase", {**phase, "name": name})])
    return phase


def _cells(
    rec: Any, sweep: SweepConfig, cells: list[Cell], stop: Callable[[], bool], say: Callable[[str], None],
    counter: Any, gpu: Any, state: dict[str, Any],
) -> None:  # fmt: skip
    setting: tuple[int | None, float | None] = (None, None)
    for n, cell in enumerate(cells, 1):
        if stop():
            break
        if gpu is not None and (cell.sm_clock, cell.power_limit) != setting:
            setting = (cell.sm_clock, cell.power_limit)
            if cell.sm_clock:
                gpu.lock_sm(cell.sm_clock)
            if cell.power_limit:
                gpu.power_limit(cell.power_limit)
            say(f"effmon sweep: GPU setting now SM {cell.sm_clock or 'free'} MHz, power limit "
                f"{f'{cell.power_limit:g} W' if cell.power_limit else 'as it was'}")  # fmt: skip
            _wait(1.0, stop)  # the clock settles; a locked clock idles higher: the static power at this setting
            _idle(rec, cell.idle_phase, sweep.idle_s, stop)
        result = _run_cell(rec, sweep, cell, stop, counter)
        state["cells"].append(result)
        rec.set_meta(sweep=state)
        s = result["load"]
        tps = s.get("output_token_throughput")
        say(f"effmon sweep: [{n}/{len(cells)}] {cell.name}: {result['rounds']} round(s), "
            f"{s['succeeded']} requests, {'N/A' if tps is None else f'{tps:.1f}'} tokens/s, "
            f"{'stable' if result['stable'] else 'not stable: ' + result['why']}")  # fmt: skip


@contextmanager
def _gpu_settings(rec: Any, sweep: SweepConfig) -> Iterator[Any]:
    """Nothing unless the sweep asks for clocks or power limits; then GpuSettings, checked before the first
    change and restored when the block ends however it ends (the session's meta says what was done)."""
    if not sweep.changes_gpu:
        yield None
        return
    from effmon.core.gpuctl import ClockError, GpuSettings

    try:
        gpu = GpuSettings()
        gpu.check(sweep.sm_clocks, sweep.power_limits)
    except ClockError as exc:
        raise SweepError(str(exc), exc.code) from None
    with gpu:
        try:
            yield gpu
        finally:
            restored = gpu.restore()
            rec.set_meta(gpu_settings={"sm_clocks": sweep.sm_clocks, "power_limits_w": sweep.power_limits,
                                       "restored": restored})  # fmt: skip


def _rounds(sweep: SweepConfig, cell: Cell) -> Iterator[LoadConfig]:
    cfg = dataclasses.replace(
        sweep.base,
        prompt_tokens=cell.input_tokens or sweep.base.prompt_tokens,
        output_tokens=cell.output_tokens,
        concurrency=cell.concurrency,
        requests=sweep.requests,
        duration=None,
        rate=None,
        prompts=sweep.tasks.get(cell.task) if cell.task else None,
    )
    for r in range(sweep.max_rounds):
        yield dataclasses.replace(cfg, seed=sweep.base.seed + r)


def _run_cell(rec: Any, sweep: SweepConfig, cell: Cell, stop: Callable[[], bool], counter: Any) -> dict[str, Any]:
    t_start = time.time()
    results: list[RequestResult] = []
    rates: list[float] = []
    why = f"{sweep.max_rounds} rounds ran"

    def keep(r: RequestResult) -> None:
        row = request_row(r)
        row.values["phase"] = cell.name
        rec.add([row])

    for cfg in _rounds(sweep, cell):
        mine: list[RequestResult] = []
        _, wall = asyncio.run(run_load(cfg, keep, stop, results=mine, counter=counter))
        results += mine
        if mine and not any(r.ok for r in mine) and not stop():
            first = next((f"{r.error}: {r.detail}" if r.detail else str(r.error) for r in mine), "")
            raise SweepError(f"cell {cell.name}: every request of a round failed ({first}); the sweep stops here")
        tokens = sum(r.output_tokens or 0 for r in mine if r.ok)
        rates.append(tokens / wall if wall else 0.0)
        spread = spread_of(rates[-3:])
        if stop():
            why = "stopped"
            break
        if len(rates) >= sweep.min_rounds and spread is not None and spread <= sweep.spread:
            why = ""
            break
        if time.time() - t_start >= sweep.budget_s:
            why = f"the cell's {sweep.budget_s:g} s budget ran out"
            break
    t_end = time.time()
    rec.add([Row("phase", {"t_start": t_start, "t_end": t_end, "name": cell.name})])
    final = spread_of(rates[-3:])
    if why and final is not None:
        why += f" (spread {final:.1%} > {sweep.spread:.0%})" if final > sweep.spread else ""
    return {
        "name": cell.name,
        "task": cell.task,
        "input_tokens": cell.input_tokens,
        "output_tokens": cell.output_tokens,
        "concurrency": cell.concurrency,
        "idle_phase": cell.idle_phase,
        "sm_clock_locked": cell.sm_clock,
        "power_limit_w": cell.power_limit,
        "t_start": t_start,
        "t_end": t_end,
        "rounds": len(rates),
        "round_tokens_per_s": rates,
        "spread": final,
        "stable": not why,
        "why": why,
        "load": summarize(results, t_end - t_start, cfg).to_json(),
    }


def sweep_driver(sweep: Any, say: Callable[[str], None]) -> Any:
    """What runs the sweep's cells in a recording (``effmon serve``'s ``drive``, or :func:`sweep_url`): the ending
    (status, reason, exit code); a failed cell keeps the ones before it."""

    def drive(rec: Any, cfg: Any, stop: Callable[[], bool]) -> tuple[str, str, int]:  # cfg: sweep.base, filled in
        try:
            cells = run_sweep(rec, sweep, stop, say)
        except SweepError as exc:  # the cells before it are kept, in the session and its figures
            print(f"effmon: error: {exc}", file=sys.stderr)
            return "failed", str(exc), exc.code
        if stop():
            return "interrupted", f"stopped after {len(cells)} of {len(sweep.cells())} cells", 130
        return "complete", f"the sweep ran its {len(cells)} cells", 0

    return drive


def sweep_url(
    target: str, sweep: Any, say: Callable[[str], None], *, model: str | None, name: str | None, timeout_s: float
) -> tuple[int, Path]:
    """Sweep a server already running at ``target`` (this machine's GPUs, and the server's own metrics where it
    serves vLLM's) into a new session; returns the exit status and the session's path."""
    from effmon.core.redact import redact_text
    from effmon.core.scrape import fetch_text
    from effmon.plugins import load_registry
    from effmon.recording import Ending, Interrupts, RecordError, Recording, RecordOptions
    from effmon.serving.attach import metrics_url, server_metrics_source
    from effmon.serving.load import DiscoveryError, discover_model

    try:
        served = model or discover_model(target, "chat", min(timeout_s, 60.0))
        if model:  # not asked for its models: still make sure something answers there before the idle wait
            fetch_text(f"{target.rstrip('/')}/v1/models", {}, timeout=min(timeout_s, 10.0))
    except DiscoveryError as exc:
        raise RecordError(str(exc), 1) from None
    except ConnectionError as exc:
        if "answered HTTP" not in str(exc):  # an answer, even an error, is a server
            raise RecordError(f"{redact_text(str(exc))}; is the server running?", 1) from None
    registry = load_registry()
    sources = (*registry.live_sources(), server_metrics_source(registry))
    rec = Recording(
        "sweep",
        RecordOptions(name=name, quiet=True, sources=sources),
        slug="sweep",
        meta={"command": ["effmon", "sweep", redact_text(target)], "run_kind": "inference"},
        registry=registry,
        sources_with={"metrics_url": metrics_url(target), "window_s": 60.0},
    )
    with Interrupts() as intr, rec:
        path = rec.open()
        rec.start()
        say(f"effmon sweep: {redact_text(target)} ({served}); recording {path.stem}")
        sweep.base.url, sweep.base.model = target, served
        drive = sweep_driver(sweep, say)
        ending = rec.run_until(intr, done=lambda: Ending(*drive(rec, sweep.base, lambda: intr.count > 0)))
    return ending.code, path
