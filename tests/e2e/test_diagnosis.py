"""Why a step is slow, against references effmon did not compute: a Trainer whose collator sleeps a known time
(its own clock says how long it spent), diagnosed data-bound in every report."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from tests.e2e.test_training_scale import SCRIPTS, effmon, export, record, references  # noqa: E402


def test_data_wait_is_the_collators_own_time_and_the_run_is_diagnosed_data_bound(tmp_path):
    """A real Trainer (1 epoch, 13 optimizer steps, no evaluation) whose collator sleeps 80 ms per batch: the time
    effmon finds between steps (less the logging phases) is the time the collator itself measured, within 5 %."""
    home, out = tmp_path / "h", tmp_path / "out"
    record(home, sys.executable, str(SCRIPTS / "trainer_reference.py"), str(out), "--epochs", "1", "--eval-steps",
           "100000", "--collate-sleep", "0.08")  # fmt: skip
    ref = references(out, "reference")[0]
    doc = export(home, "last")
    waited = doc["effmon"]["training"]["data_wait_s_sum"]
    assert waited == pytest.approx(ref["collate_s_after_first_step"], rel=0.05)
    assert ref["collate_s_after_first_step"] > 0.8  # 11 training batches of 80 ms between steps: a real wait
    found = doc["effmon"]["diagnosis"]
    assert found["rules"][0] == "data-bound", found
    assert found["data_wait_share"] > 0.3 and "waiting for data" in found["line"], found
    table = effmon(home, "report", "last")
    assert "data-bound" in table.stdout and "num_workers" in table.stdout, table.stdout
