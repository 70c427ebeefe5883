"""The dashboard driven by Pilot on sessions replayed from the real H100 trace."""

import asyncio
import itertools
import json

import pytest

pytest.importorskip("textual")

from textual.widgets import ContentSwitcher, DataTable, Input, Static  # noqa: E402

from effmon.core.store import SessionReader  # noqa: E402
from effmon.tui.app import HelpScreen, make_app  # noqa: E402


def text_of(app, selector):
    """The widget's text as drawn on screen."""
    from textual.geometry import Region

    w = app.query_one(selector)
    return "\n".join(strip.text for strip in w.render_lines(Region(0, 0, w.region.width, w.region.height)))


def app_at(session, offset=60.0, **kw):
    with SessionReader(session) as r:
        lo, _ = r.time_range()
    kw.setdefault("mode", "replay")
    return make_app(session, sync=True, paused=True, cursor=lo + offset, **kw)


def run(coro):
    return asyncio.run(coro)


def test_every_panel_shows_the_replayed_lora_phase(phases_session):
    async def go():
        app = app_at(phases_session, 60.0)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            header = text_of(app, "#header")
            assert "phases" in header and "paused" in header and "window 10 min" in header
            assert "replay of h100_phases.jsonl" in header  # the host part: the trace, not this machine
            card = text_of(app, "#gpu-0-text")
            assert "SM active 88%" in card and "NVML util 97%" in card and "tensor 20%" in card
            assert "632/700 W" in card and "kJ" in card
            assert "tokens/s" in text_of(app, "#throughput")
            assert "step p50" in text_of(app, "#latency")
            eff = text_of(app, "#efficiency")
            assert "AMU" in eff and "PCU" in eff and "AEC" in eff and "J/token" in eff
            table = app.query_one("#procs", DataTable)
            assert "no per-process data" in str(table.get_row_at(0)[-1])

    run(go())


def test_efficiency_strip_matches_the_report(phases_session):
    from effmon.metrics import evaluate, so_far

    async def go():
        app = app_at(phases_session, 70.0)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            with SessionReader(phases_session) as r:
                lo, _ = r.time_range()
                s = evaluate(r, so_far(lo, lo + 70.0), with_series=False)
            eff = text_of(app, "#efficiency")
            assert f"AMU {s.value('AMU'):.1f} GiB" in eff
            assert f"AEC {s.value('AEC'):.0f} W" in eff
            assert f"J/step {s.value('J_per_step'):.3g}" in eff

    run(go())


def test_pause_play_step_jump_and_speed(phases_session):
    async def go():
        app = app_at(phases_session, 60.0)
        async with app.run_test(size=(100, 40)) as pilot:
            lo, hi = app.view.time_range()
            await pilot.press("p")
            assert app.paused is False
            await pilot.press("space")
            assert app.paused is True and "paused" in text_of(app, "#header")
            await pilot.press("right")
            assert app.cursor == pytest.approx(lo + 65.0)
            await pilot.press("left", "left")
            assert app.cursor == pytest.approx(lo + 55.0)
            await pilot.press("end")
            assert app.cursor == hi
            await pilot.press("home")
            assert app.cursor == lo
            await pilot.press("s")
            assert app.speed == 10.0 and "×10" in text_of(app, "#header")
            app.paused = False
            app.tick()
            assert app.cursor == pytest.approx(lo + 10.0)  # one 1 s refresh at x10

    run(go())


def test_help_lists_keys_and_source_state(phases_session):
    async def go():
        app = app_at(phases_session)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            body = str(app.screen.query_one("#help-body Static", Static).content)
            assert "replay.energy" in body and "quit" in body
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)

    run(go())


def test_window_chart_metric_and_gpu_keys(phases_session):
    async def go():
        app = app_at(phases_session)
        async with app.run_test(size=(100, 40)) as pilot:
            assert "window 10 min" in text_of(app, "#header")
            await pilot.press("w")
            assert "window 1 h" in text_of(app, "#header")
            await pilot.press("c")
            assert app.query_one("#lower", ContentSwitcher).current == "chart"
            assert "power" in text_of(app, "#chart-label")
            await pilot.press("m")
            assert "memory used" in text_of(app, "#chart-label")
            await pilot.press("c")
            assert app.query_one("#lower", ContentSwitcher).current == "procs"
            await pilot.press("0")
            assert app.focus_gpu == 0
            await pilot.press("3")  # there is one GPU in this trace
            await pilot.pause()
            assert app.focus_gpu == 0
            await pilot.press("g")
            assert app.focus_gpu == 0

    run(go())


def test_filter_processes(phases_session):
    async def go():
        app = app_at(phases_session)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("slash")
            box = app.query_one("#filter", Input)
            assert box.has_class("visible") and app.focused is box
            await pilot.press(*"zzz", "enter")
            assert app.proc_filter == "zzz" and not box.has_class("visible")
            assert "no process matches 'zzz'" in str(app.query_one("#procs", DataTable).get_row_at(0)[-1])
            await pilot.press("slash", "escape")
            assert app.proc_filter == ""
            await pilot.press("q")  # keys go to the app again, not to the hidden input
            assert app.return_code is not None or not app.is_running

    run(go())


def test_report_key_writes_the_efficientllm_json(phases_session, tmp_path):
    async def go():
        app = app_at(phases_session, 90.0, report_dir=tmp_path)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("r")
            await app.workers.wait_for_complete()
            await pilot.pause()

    run(go())
    files = list(tmp_path.glob("*.efficientllm.json"))
    assert len(files) == 1
    html = list(tmp_path.glob("*.html"))
    assert len(html) == 1 and "EfficientLLM metrics" in html[0].read_text()
    doc = json.loads(files[0].read_text())
    assert doc["total_time"] == pytest.approx(90.0, abs=0.01) and doc["AEC"] > 0


def test_quit_calls_back_so_the_session_is_flushed(phases_session):
    called = []

    async def go():
        app = app_at(phases_session, on_quit=lambda: called.append(True))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("q")

    run(go())
    assert called == [True]


def test_live_mode_follows_the_latest_reading(phases_session):
    async def go():
        app = make_app(phases_session, mode="live", sync=True)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            _, hi = app.view.time_range()
            assert app.snap.t == hi

    run(go())


def test_eight_gpus_at_80x24_collapse_and_nothing_overlaps(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.synth import make_session

    session = make_session(tmp_path / "eight.effmon", gpus=8, seconds=60)

    async def go(size):
        app = make_app(session, mode="replay", sync=True, paused=True)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            cards = list(app.query(".gpu-card"))
            assert len(cards) == 8
            compact = all(c.has_class("compact") for c in cards)
            regions = [app.query_one(s).region for s in ("#header", "#gpus", "#panels", "#efficiency", "#lower")]
            for a, b in itertools.pairwise(regions):
                assert a.bottom <= b.y, (a, b)
            assert regions[-1].bottom <= size[1] - 1  # the footer stays visible
            assert all(r.right <= size[0] for r in regions)
            return compact

    assert run(go((80, 24))) is True
    assert run(go((200, 60))) is False


def test_failing_source_shows_its_error_in_help(tmp_path, monkeypatch):
    from effmon.core.clock import VirtualClock
    from effmon.plugins import SourceInfo, SourceSpec, hookimpl, load_registry
    from effmon.recording import Recording, RecordOptions

    class Flaky:
        name = "flaky"
        channels = {"x": 0.1}

        def __init__(self, options):
            pass

        def open(self):
            return SourceInfo()

        def read(self, channel, now):
            raise TimeoutError("sensor did not answer")

        def close(self):
            pass

    class Plugin:
        @hookimpl
        def effmon_register_sources(self, register):
            register(SourceSpec("flaky", "a sensor that times out", (), Flaky))

    monkeypatch.setenv("EFFMON_HOME", str(tmp_path))
    reg = load_registry(entry_points=False, extra_plugins=(Plugin(),))
    from effmon.sources.replay import ReplaySource
    from tests.conftest import PHASES_TRACE

    rec = Recording(
        "command",
        RecordOptions(name="flaky", sources=("flaky", "replay"), quiet=True),
        registry=reg,
        replay_path=str(PHASES_TRACE),
    )
    sources = [Flaky(None), ReplaySource(rec.source_options)]
    rec.open(clock=VirtualClock(sources[1].start_time), sources=sources)
    rec.sampler.run(until=lambda now: now >= sources[1].start_time + 5)
    rec.finish("complete")

    async def go():
        app = make_app(rec.path, mode="replay", sync=True, paused=True)
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("question_mark")
            body = str(app.screen.query_one("#help-body Static", Static).content)
            assert "flaky.x" in body and "failed" in body and "sensor did not answer" in body
            assert "replay.fast" in body

    run(go())


def test_tab_moves_between_gpu_cards_and_the_chart_follows(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.synth import make_session

    session = make_session(tmp_path / "two.effmon", gpus=2, seconds=30)

    async def go():
        app = make_app(session, mode="replay", sync=True, paused=True)
        async with app.run_test(size=(120, 50)) as pilot:
            await pilot.pause()
            assert app.focused.id == "procs"
            await pilot.press("tab")
            assert app.focused.id == "gpu-0"
            await pilot.press("tab")
            assert app.focused.id == "gpu-1" and app.focus_gpu == 1
            assert app.snap.chart["gpu"] == 1
            await pilot.press("2")  # there are two GPUs: 0 and 1
            assert app.focus_gpu == 1

    run(go())


def test_an_attached_jobs_logged_history_is_shown_with_where_it_comes_from(tmp_path):
    """A session of `effmon attach` to a Trainer job effmon did not start: its logged steps (read from the job's
    TensorBoard events) fill the training panel, saying where they come from, and the chart starts at the loss."""
    from effmon_transformers.state import TRAIN_LOG, log_row

    from effmon.core.declare import CORE_ENTITIES
    from effmon.core.store import SessionWriter

    path = tmp_path / "attach.effmon"
    w = SessionWriter(path, [*CORE_ENTITIES, TRAIN_LOG], {"name": "attach", "status": "recording", "started_at": 100.0})
    w.set_meta(tensorboard="/runs/Dec02_12-00-00_host")
    rows = [log_row(step, {"loss": 3.0 - step / 10, "lr": 1e-3, "grad_norm": 0.5}) for step in range(1, 36)]
    w.write([type(r)(r.entity, r.values | {"t": 110.0 + r.values["step"] * 0.5}) for r in rows])
    w.write([type(rows[0])("host", {"t": 130.0, "cpu_pct": 50.0})])
    w.close()

    async def go():
        app = make_app(path, mode="live", sync=True)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            throughput = text_of(app, "#throughput")
            assert "history from" in throughput and "Dec02_12-00-00_host" in throughput, throughput
            assert "logged steps" in throughput and "35 (last: 35)" in throughput, throughput
            assert "loss" in text_of(app, "#latency") and "-0.5" in text_of(app, "#latency")
            await pilot.press("c")
            await pilot.pause()
            label = text_of(app, "#chart-label")
            assert label.startswith("training · loss") and "no step times" in label, label

    run(go())


def test_an_attached_jobs_progress_counts_its_live_reads_not_its_history(tmp_path):
    """Logged steps read from an attached job's logs: 100 of history at once, then one every 2 s. The rate is the
    live one (0.5 steps/s), not the history's, and the job's plan (from its trainer_state.json) gives the rest."""
    from effmon_transformers.state import TRAIN_LOG, log_row

    from effmon.core.declare import CORE_ENTITIES
    from effmon.core.store import SessionWriter
    from effmon.metrics.progress import session_progress

    path = tmp_path / "attach.effmon"
    w = SessionWriter(path, [*CORE_ENTITIES, TRAIN_LOG], {"name": "attach", "status": "recording", "started_at": 100.0})
    w.set_meta(plan={"total_steps": 200})
    stamp = lambda r, t: type(r)(r.entity, r.values | {"t": t})  # noqa: E731
    w.write([stamp(log_row(step, {"loss": 1.0}), 101.0) for step in range(1, 101)])
    w.write([stamp(log_row(100 + i, {"loss": 1.0}), 101.0 + 2 * i) for i in range(1, 11)])
    w.close()
    with SessionReader(path) as r:
        p = session_progress(r)
    assert p.done == 110 and p.total == 200
    assert p.rate_per_s == pytest.approx(0.5)
    assert p.left_s == pytest.approx(90 / 0.5)
