"""The golden reports (tests/golden) rendered in this process: the bundled H100 trace replayed with
``record_replay``, each report through the CLI's own ``main()`` (the registry, ``evaluate`` and the formats), set
against the same files tests/e2e/test_golden.py checks through ``python -m effmon``. A change to a metric or a
format shows here in seconds."""

import json
import time

import pytest

from effmon.cli import main
from effmon.recording import RecordOptions, record_replay
from tests.e2e.test_golden import _rstrip
from tests.golden import make_golden as golden
from tests.golden.additions import without_additions


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    h = tmp_path_factory.mktemp("golden-inproc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EFFMON_HOME", str(h))
        assert record_replay(str(golden.TRACE), RecordOptions(name="golden", quiet=True), as_fast_as_possible=True) == 0
    return h


@pytest.fixture
def effmon(home, monkeypatch, capsys):
    for key, value in {"EFFMON_HOME": str(home), "COLUMNS": "120", "NO_COLOR": "1", "TZ": "UTC"}.items():
        monkeypatch.setenv(key, value)
    time.tzset()

    def run(*args: str) -> str:
        capsys.readouterr()
        assert main(list(args)) == 0
        return golden.normalise(capsys.readouterr().out, home)

    yield run
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(("name", "args"), golden.REPORTS, ids=[n for n, _ in golden.REPORTS])
def test_report_in_process_is_the_golden_file(effmon, name, args):
    got = effmon("report", "golden", *args)
    expected = (golden.HERE / name).read_text(encoding="utf-8")
    if name.endswith(".txt"):
        assert _rstrip(without_additions(name, got, expected)) == _rstrip(expected)
    else:
        assert without_additions(name, got, expected) == expected


def test_sessions_show_and_compare_in_process_are_the_golden_files(effmon, home):
    assert _rstrip(effmon("sessions", "show", "golden")) == _rstrip((golden.HERE / "sessions-show.txt").read_text())
    a, b = home / "lora.json", home / "generate.json"
    a.write_text(effmon("report", "golden", "--phase", "lora_finetune", "--format", "efficientllm"))
    b.write_text(effmon("report", "golden", "--phase", "generate", "--format", "efficientllm"))
    expected = (golden.HERE / "compare.json").read_text()
    assert (
        without_additions("compare.json", effmon("compare", str(a), str(b), "--format", "json"), expected) == expected
    )


def test_a_metric_declared_since_is_an_addition_a_changed_figure_is_not(effmon):
    """Declaring a metric (here through the plugin hook) touches no golden file; a figure that moves still fails."""
    from effmon.metrics import add_plugin, remove_plugin
    from tests.unit.test_registry import TokensPerWatt

    keys = add_plugin(TokensPerWatt(), "tokens-per-watt")
    try:
        for name in ("whole.json", "whole.efficientllm.json", "whole.table.txt"):
            args = dict(golden.REPORTS)[name]
            got, expected = effmon("report", "golden", *args), (golden.HERE / name).read_text()
            assert "tokens_per_s_per_w" in got or "tokens/s/W" in got  # the new metric is in the report
            assert _rstrip(without_additions(name, got, expected)) == _rstrip(expected)
    finally:
        remove_plugin(keys)
    expected = (golden.HERE / "whole.json").read_text()
    changed = expected.replace('"AMU": {"gib": 6.29', '"AMU": {"gib": 6.30', 1)
    assert changed != expected and without_additions("whole.json", changed, expected) != expected
    lost = json.loads(expected)
    del lost["AEC"]["watts"]
    assert without_additions("whole.json", json.dumps(lost) + "\n", expected) != expected
