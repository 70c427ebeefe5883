"""Where the step time goes and what limits a run: exact arithmetic on fixed steps, and the real H100 trace's
phases diagnosed as what they were (the LoRA fine-tune compute-bound, batched generation low SM activity)."""

import pytest

from effmon.core.store import SessionReader
from effmon.metrics import evaluate, resolve_window
from effmon.metrics.diagnosis import RULES, Figures, diagnose
from effmon.metrics.stats import StepGroup, data_wait


def group(step, start, end, rank=0):
    return StepGroup(step, [{"t_start": start, "t_end": end, "rank": rank}])


def test_data_wait_is_the_gaps_between_steps_less_the_phases_inside_them():
    groups = [group(1, 0.0, 1.0), group(2, 1.3, 2.0), group(3, 2.5, 3.0), group(4, 3.1, 4.0)]
    assert data_wait(groups, []) == pytest.approx(0.3 + 0.5 + 0.1)
    # a log phase of 0.2 s inside the second gap, an evaluation after the last step (not in any gap)
    assert data_wait(groups, [(2.1, 2.3), (4.5, 9.0)]) == pytest.approx(0.3 + 0.3 + 0.1)
    assert data_wait(groups[:1], []) is None
    # two ranks: from the slowest rank's end to the first rank's begin
    two = [StepGroup(1, [{"t_start": 0.0, "t_end": 1.0}, {"t_start": 0.0, "t_end": 1.2}]),
           StepGroup(2, [{"t_start": 1.5, "t_end": 2.0}, {"t_start": 1.6, "t_end": 2.0}])]  # fmt: skip
    assert data_wait(two, []) == pytest.approx(0.3)


def figures(**kw):
    base = {"step_s": 0.4, "data": 0.05, "comm": 0.0, "sm": 0.6, "sm_from_gpm": True, "tensor": 0.2, "throttled": 0.0,
            "spread": None}  # fmt: skip
    return Figures(**{**base, **kw})


def test_the_rules_fire_in_order_and_compute_bound_only_alone():
    names = [r.name for r in RULES]
    assert names.index("data-bound") < names.index("compute-bound")
    fired = [r.name for r in RULES if r.fires(figures(data=0.31))]
    assert fired[0] == "data-bound"
    assert [r.name for r in RULES if r.fires(figures(sm=0.1))] == ["low SM activity"]
    assert [r.name for r in RULES if r.fires(figures(spread=1.3))][0] == "straggler"
    assert [r.name for r in RULES if r.fires(figures(throttled=0.2))][0] == "throttled"


@pytest.mark.parametrize(
    ("phase", "verdict", "sm"),
    [("lora_finetune", "compute-bound", "SM active 47%"), ("generate", "low SM activity", "SM active 3%"),
     ("matmul_bf16", "compute-bound", "SM active 90%")],
)  # fmt: skip
def test_the_h100_trace_phases_are_diagnosed_as_what_they_were(phases_session, phase, verdict, sm):
    with SessionReader(phases_session) as r:
        found = diagnose(evaluate(r, resolve_window(r, phase=phase), with_series=False))
    assert found.fired and found.fired[0].name == verdict, found.verdict
    assert sm in found.line and found.verdict.startswith(verdict)
