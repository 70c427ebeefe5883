"""Reports of the bundled H100 trace are byte-identical to the ones the code wrote before the metrics were
restructured (issue 11; golden files made by ``tests/golden/make_golden.py`` at that commit), except for
the metrics added since, which are taken out before comparing."""

import json
import re

import pytest

from tests.golden import make_golden as golden

# What was added after the golden files were written: rows of the terminal tables, a JSON group,
# rows of compare.
ADDED_TABLE_LABELS = ("J/step", "tokens/J")
ADDED_JSON_KEYS = ("efficiency",)
ADDED_COMPARE_KEYS = ("J_per_request", "J_per_step", "tokens_per_J")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    home = tmp_path_factory.mktemp("golden-home")
    golden.replay(home)
    return golden.render_all(home)


def _without_added(name: str, text: str) -> str:
    if name.endswith(".txt"):
        pattern = re.compile(r"^│\s+(" + "|".join(map(re.escape, ADDED_TABLE_LABELS)) + r")\s+│")
        return "".join(line for line in text.splitlines(keepends=True) if not pattern.match(line))
    doc = json.loads(text)
    if name == "compare.json":
        doc["metrics"] = [m for m in doc["metrics"] if m["key"] not in ADDED_COMPARE_KEYS]
        return json.dumps(doc, indent=2) + "\n"
    for key in ADDED_JSON_KEYS:
        doc.pop(key, None)
        if isinstance(doc.get("effmon"), dict):
            doc["effmon"].pop(key, None)
    return json.dumps(doc, allow_nan=False) + "\n"


@pytest.mark.parametrize("name", [n for n, _ in golden.REPORTS] + ["sessions-show.txt", "compare.json"])
def test_report_is_byte_identical_to_the_golden_file(rendered, name):
    expected = (golden.HERE / name).read_text(encoding="utf-8")
    got = rendered[name] if name.endswith(".csv") else _without_added(name, rendered[name])
    if name.endswith(".txt"):  # Rich pads lines to the widest one, which holds the (temporary) home's path
        expected, got = _rstrip(expected), _rstrip(got)
    assert got == expected


def _rstrip(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines())


def test_the_added_metrics_are_there_and_only_they_were_taken_out(rendered):
    """The comparison above must not pass by removing too much: the added rows exist, and nothing else
    differs between the raw output and the golden file."""
    table = rendered["whole.table.txt"]
    for label in ADDED_TABLE_LABELS:
        assert re.search(r"│\s+" + re.escape(label) + r"\s+│\s+[0-9.e+-]+\s+│", table), label
    doc = json.loads(rendered["whole.json"])
    assert doc["efficiency"]["tokens_per_j"] == pytest.approx(1 / doc["energy_per"]["token_j"])
    compared = {m["key"] for m in json.loads(rendered["compare.json"])["metrics"]}
    assert set(ADDED_COMPARE_KEYS) <= compared
    golden_lines = (golden.HERE / "whole.table.txt").read_text().splitlines()
    assert len(table.splitlines()) == len(golden_lines) + len(ADDED_TABLE_LABELS)
