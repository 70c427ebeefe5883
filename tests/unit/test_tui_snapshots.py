"""SVG snapshots of the dashboard on the real H100 trace (pytest-textual-snapshot).

Deterministic: a replayed session (its time stamps are the trace's), a paused cursor at a fixed
offset, synchronous refresh, no wall clock and no host name on screen. Update with
``python -m pytest tests/unit/test_tui_snapshots.py --snapshot-update`` and look at the report.
"""

import pytest

pytest.importorskip("pytest_textual_snapshot")

from effmon.core.store import SessionReader  # noqa: E402
from effmon.tui.app import make_app  # noqa: E402

LORA_AT = 60.0  # seconds into h100_phases.jsonl: the LoRA fine-tune
GENERATE_AT = 99.0  # batched greedy generation (four batches done)


def app_at(session, offset):
    with SessionReader(session) as r:
        lo, _ = r.time_range()
    return make_app(session, mode="replay", sync=True, paused=True, cursor=lo + offset)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
@pytest.mark.parametrize("offset", [LORA_AT, GENERATE_AT], ids=["lora", "generate"])
def test_dashboard_snapshot(snap_compare, phases_session, size, offset):
    assert snap_compare(app_at(phases_session, offset), terminal_size=size)


def test_chart_view_snapshot(snap_compare, phases_session):
    assert snap_compare(app_at(phases_session, GENERATE_AT), terminal_size=(80, 24), press=["c", "m", "m"])


# -- the fleet view (effmon top --prometheus URL), on answers shaped as Prometheus gives them -----------------------
@pytest.fixture
def utc(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("press", [[], ["down", "enter"]], ids=["fleet", "host"])
def test_fleet_view_snapshot(snap_compare, utc, press):
    from effmon.tui.fleet import FleetApp
    from tests.fleet_data import trace_fleet

    fleet = trace_fleet()
    app = FleetApp(fleet.url, fleet.match, fixed=(fleet.start, fleet.end), first=fleet)
    assert snap_compare(app, terminal_size=(80, 24), press=press)
