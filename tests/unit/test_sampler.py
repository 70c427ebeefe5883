import itertools
import threading
import time

from effmon.core.clock import VirtualClock
from effmon.core.declare import Row
from effmon.core.sampler import Sampler


class CountingSource:
    def __init__(self, name, channels, fail_until=0, sleep=0.0):
        self.name = name
        self.channels = channels
        self.calls = {c: [] for c in channels}
        self.fail_until = fail_until
        self.sleep = sleep

    def open(self):
        return None

    def read(self, channel, now):
        self.calls[channel].append(now)
        if self.sleep:
            time.sleep(self.sleep)
        if len(self.calls[channel]) <= self.fail_until:
            raise RuntimeError("device went away")
        return [Row("host", {"t": now, "cpu_pct": 1.0})]

    def close(self):
        pass


def run_virtual(sources, seconds):
    clock = VirtualClock(1000.0)
    rows = []
    sampler = Sampler(sources, rows.extend, clock=clock)
    sampler.run(until=lambda now: now >= 1000.0 + seconds)
    return sampler, rows


def test_per_channel_rates_on_a_fixed_grid():
    src = CountingSource("a", {"fast": 0.1, "slow": 1.0})
    sampler, rows = run_virtual([src], 10.0)
    assert len(src.calls["fast"]) == 101  # 0.0, 0.1, ... 10.0
    assert len(src.calls["slow"]) == 11
    # drift-corrected: every read lands on the grid, no accumulated error
    for i, t in enumerate(src.calls["fast"]):
        assert abs(t - (1000.0 + i * 0.1)) < 1e-6
    assert len(rows) == 112


def test_missed_ticks_are_skipped_not_burst():
    src = CountingSource("a", {"fast": 0.1})
    clock = VirtualClock(0.0)
    sampler = Sampler([src], lambda rows: None, clock=clock)
    sampler.tick(0.0)
    sampler.tick(1.05)  # the thread was away for 1 s: one read, not ten
    assert len(src.calls["fast"]) == 2
    state = sampler.channels[0][1]
    assert state.missed_ticks == 9  # ticks 0.1 .. 0.9; the read at 1.05 serves the one due at 1.0
    assert abs(state.next_due - 1.1) < 1e-9


def test_failing_source_backs_off_and_others_keep_their_rate():
    bad = CountingSource("bad", {"fast": 0.1}, fail_until=3)
    good = CountingSource("good", {"fast": 0.1})
    sampler, rows = run_virtual([bad, good], 20.0)
    assert len(good.calls["fast"]) == 201
    status = {s["source"]: s for s in sampler.status()}
    assert status["bad"]["failures"] == 3
    assert "device went away" in status["bad"]["last_error"]
    # back-off 1 s, 2 s, 4 s between the failed reads, then back to 10 Hz
    t = bad.calls["fast"]
    assert [round(b - a, 6) for a, b in itertools.pairwise(t[:4])] == [1.0, 2.0, 4.0]
    assert status["bad"]["state"] == "ok"
    assert len(t) > 4 + (20 - 7) * 10 - 2


def test_slow_source_moves_to_slow_lane_and_does_not_stall_others():
    slow = CountingSource("slow", {"x": 0.1}, sleep=0.4)
    fast = CountingSource("fast", {"x": 0.05})
    sampler = Sampler([slow, fast], lambda rows: None, slow_after_s=0.2)
    sampler.start()
    time.sleep(2.5)
    sampler.stop()
    status = {s["source"]: s for s in sampler.status()}
    assert status["slow"]["state"] == "slow"
    # after the first 0.4 s stall the fast source is read at its own rate (~20 Hz); well above what
    # it would get if every slow read blocked the thread (~2 Hz)
    assert len(fast.calls["x"]) > 25
    assert len(slow.calls["x"]) < 10


def test_stop_interrupts_the_wait():
    src = CountingSource("a", {"x": 30.0})
    sampler = Sampler([src], lambda rows: None)
    sampler.start()
    t0 = time.monotonic()
    sampler.stop()
    assert time.monotonic() - t0 < 2.0
    assert not any(t.name == "effmon-sampler" and t.is_alive() for t in threading.enumerate())
