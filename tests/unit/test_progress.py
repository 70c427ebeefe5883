"""The progress model on fixed step times: exact arithmetic, in process."""

import pytest

from effmon.metrics.progress import RECENT_STEPS, progress


def steady(n: int, every: float, start: float = 100.0) -> list[tuple[float, int]]:
    return [(start + every * i, i) for i in range(1, n + 1)]


def test_time_left_is_the_remaining_steps_over_the_recent_rate():
    ends = steady(50, 0.5)  # step 50 ended at t=125
    p = progress(ends, started_at=90.0, now=125.0, total=200)
    assert p.rate_per_s == pytest.approx(2.0)
    assert p.left_s == pytest.approx(150 / 2.0)
    assert p.elapsed_s == pytest.approx(35.0)
    assert p.fraction == pytest.approx(0.25)
    assert p.count_text() == "step 50/200 (25%)"


def test_a_slow_start_does_not_count_and_a_change_of_pace_does():
    slow = [(100.0 + 10 * i, i) for i in range(1, 6)]  # 5 steps of 10 s (start-up, compile)
    fast = [(150.0 + 0.25 * i, 5 + i) for i in range(1, 41)]  # then 4 steps/s
    p = progress(slow + fast, started_at=100.0, now=160.0, total=100)
    assert p.rate_per_s == pytest.approx(4.0)  # the last RECENT_STEPS steps only
    assert RECENT_STEPS < 40
    assert p.left_s == pytest.approx((100 - 45) / 4.0)


def test_time_since_the_last_step_is_taken_off():
    p = progress(steady(20, 1.0), started_at=100.0, now=123.0, total=40)  # last step ended 3 s ago
    assert p.left_s == pytest.approx(20 / 1.0 - 3.0)


def test_no_total_no_time_left_and_finished_runs_say_none():
    p = progress(steady(10, 1.0), started_at=100.0, now=110.0)
    assert p.left_s is None and p.total is None and "left" not in p.line()
    assert "steps/s" in p.line()
    done = progress(steady(10, 1.0), started_at=100.0, now=110.0, total=10, finished=True)
    assert done.left_s is None and "left" not in done.line()
    assert progress([], started_at=0.0, now=1.0, total=5).count_text() == "step 0/5 (0%)"
    assert progress(steady(1, 1.0), started_at=100.0, now=101.0, total=5).left_s is None  # one step: no rate


def test_lines_name_the_epoch_and_the_unit():
    p = progress(steady(30, 0.5), started_at=100.0, now=115.0, total=60, epoch=1.5, epochs=3, unit="request")
    assert p.line().startswith("request 30/60 (50%) · epoch 1.50/3 · 15.0 s elapsed · ")
    assert p.short() == "30/60 requests, 15.0 s left"
