"""The dashboard driven by Pilot on sessions replayed from the real H100 trace."""

import sys

import pytest

pytest.importorskip("textual")


from effmon.tui.app import make_app  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.unit.test_tui import run, text_of  # noqa: E402


def test_a_session_without_gpu_says_so_and_points_to_the_demo(tmp_path):
    from tests.conftest import run_effmon

    home = tmp_path / "h"
    assert (
        run_effmon(
            "record",
            "-q",
            "--source",
            "host",
            "--host-interval",
            "0.1",
            "--name",
            "cpu",
            "--",
            "sleep",
            "0.5",
            env_home=home,
        ).returncode
        == 0
    )

    async def go():
        app = make_app(home / "sessions" / "cpu.effmon", mode="replay", sync=True, paused=True)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            text = text_of(app, "#nogpu")
            assert "No GPU" in text and "effmon demo" in text and "host CPU" in text

    run(go())


def test_the_dashboard_of_a_real_run_ends_calmly_in_pilot(tmp_path, monkeypatch):
    """A real job recorded on a thread (as `effmon run` does), the dashboard in Pilot on its session: while it
    runs the header has step N / total; once it ends, `complete (exit 0)`, the end line, the final figures and no
    error notification, through several refreshes of the closed session."""
    import asyncio
    import threading

    from textual.widgets import Static

    from effmon.recording import RecordOptions
    from effmon.training.run import run_training
    from effmon.tui.app import make_app

    monkeypatch.setenv("EFFMON_HOME", str(tmp_path))
    opened = threading.Event()
    holder: dict = {}

    def on_open(rec):
        holder["path"] = rec.path
        opened.set()

    job = [sys.executable, str(REPO / "tests" / "data" / "steady_job.py"), "30", "0.1"]
    worker = threading.Thread(
        target=lambda: holder.update(
            code=run_training(job, None, RecordOptions(quiet=True), on_open=on_open, capture_output=True)
        ),  # fmt: skip
        daemon=True,
    )
    worker.start()
    assert opened.wait(30)

    async def go():
        app = make_app(holder["path"], refresh_s=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            header = ""
            for _ in range(150):
                await pilot.pause(0.1)
                header = str(app.query_one("#header", Static).render())
                if "/30 (" in header:
                    break
            assert "● recording" in header and "/30 (" in header, header
            for _ in range(300):
                await pilot.pause(0.1)
                if app.snap is not None and app.snap.state == "complete":
                    break
            for _ in range(10):  # refreshes of the closed session
                await pilot.pause(0.2)
            header = str(app.query_one("#header", Static).render())
            ended = app.query_one("#ended", Static)
            assert "complete (exit 0)" in header and "step 30/30 (100%)" in header, header
            assert ended.display and "✓ complete (exit 0)" in str(ended.render()), str(ended.render())
            assert "effmon sessions show" in str(ended.render())
            errors = [n for n in app._notifications if n.severity == "error"]
            assert not errors, [n.message for n in errors]
            assert any(label.startswith("tokens/s") for label, _ in app.snap.throughput), app.snap.throughput
            # the chart view of a run without a GPU: its loss first, then what a fine-tune needs, never GPU N/A
            await pilot.press("c")
            seen = []
            for _ in range(app.snap.chart["count"]):
                await pilot.pause(0.3)
                seen.append(str(app.query_one("#chart-label", Static).render()))
                await pilot.press("m")
            assert seen[0].startswith("training · loss") and "lr " in seen[0], seen
            names = [line.split("  over")[0] for line in seen]
            assert names == ["training · loss", "training · step time (s)", "training · tokens/s (per step, with "
                             "the time between steps)", "training · learning rate", "training · grad norm",
                             "host CPU (%)", "host memory used (GiB)"], names  # fmt: skip
            assert not any("GPU" in line or "N/A" in line.split("  over")[1][:20] for line in seen[:3]), seen

    asyncio.run(go())
    worker.join(30)
    assert holder["code"] == 0
