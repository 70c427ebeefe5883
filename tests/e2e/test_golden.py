"""Reports of the bundled H100 trace, through ``python -m effmon``, are byte-identical to the golden files
(``tests/golden``), except for what was added since they were written (a new metric, a new field), which is taken
out before comparing (tests/golden/additions.py): golden files take additions, never changes.

History: the files were first written by the code before the metrics were restructured (issue 11, commit
0a72feb), and the restructured code matched them byte for byte apart from the three metrics it added (J/step,
J/request, tokens/J; green at f8b1dc1). They were rewritten once for an intended change: memory in GiB
everywhere (issue 12). Rewrite them only for an intended change (``python -m tests.golden.make_golden``), and
say which in the commit."""

import json
import re

import pytest

from tests.golden import make_golden as golden
from tests.golden.additions import without_additions


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    home = tmp_path_factory.mktemp("golden-home")
    golden.replay(home)
    return golden.render_all(home)


@pytest.mark.parametrize("name", [n for n, _ in golden.REPORTS] + ["sessions-show.txt", "compare.json"])
def test_report_is_byte_identical_to_the_golden_file(rendered, name):
    expected = (golden.HERE / name).read_text(encoding="utf-8")
    got = without_additions(name, rendered[name], expected)
    if name.endswith(".txt"):  # Rich pads lines to the widest one, which holds the (temporary) home's path
        expected, got = _rstrip(expected), _rstrip(got)
    assert got == expected


def _rstrip(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines())


def test_the_metrics_added_by_the_restructure_are_in_every_output(rendered):
    """J/step, J/request and tokens/J (issue 11) are in the table, the JSON document and compare."""
    table = rendered["whole.table.txt"]
    for label in ("J/step", "J/request", "tokens/J"):
        assert re.search(r"│\s+" + re.escape(label) + r"\s+│\s+[0-9.e+-]+\s+│", table), label
    doc = json.loads(rendered["whole.json"])
    assert doc["efficiency"]["tokens_per_j"] == pytest.approx(1 / doc["energy_per"]["token_j"])
    assert doc["energy_per"]["step_j"] == pytest.approx(doc["AEC"]["energy_j"] / doc["training"]["steps"])
    compared = {m["key"] for m in json.loads(rendered["compare.json"])["metrics"]}
    assert {"J_per_request", "J_per_step", "tokens_per_J"} <= compared
