"""The dashboard driven by Pilot on sessions replayed from the real H100 trace."""

import pytest

pytest.importorskip("textual")


from effmon.tui.app import make_app  # noqa: E402
from tests.unit.test_tui import run, text_of


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
