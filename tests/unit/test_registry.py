"""The metric registry checks its own contract when a metric is declared, and a plugin's metric (through the
``effmon_register_metrics`` hook) reaches every view: the table, the JSON and EfficientLLM exports, compare,
``sources --metrics`` and the Prometheus endpoint. In process: no subprocess here (see tests/e2e for the same
plugin installed as a package and seen through the command line)."""

import json
import types

import pytest

from effmon.core.store import SessionReader
from effmon.metrics import METRICS, PLUGIN_ERRORS, RegistryError, add_plugin, evaluate, remove_plugin
from effmon.metrics.registry import check_needs, declare, json_groups, table_order
from effmon.plugins import NA, hookimpl
from effmon.report.formats import efficientllm, effmon_json
from effmon.report.render import metric_rows


def _declare(key, **kw):
    base = {"label": key, "unit": "", "better": "higher", "needs": ("gpus",)}
    return declare(key, lambda x: 1.0, module="tests", **(base | kw))


@pytest.fixture
def scratch():
    """Keys declared by a test, taken out again after it."""
    keys: list[str] = []
    yield keys
    remove_plugin([k for k in keys if k in METRICS])


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"compare": True, "better": None}, "does not say which way is better"),
        ({"better": "up"}, "better must be 'higher', 'lower' or None"),
        ({"parent": "no_such_metric"}, "its parent 'no_such_metric' is not a metric"),
        ({"json": ("AMU", "gib")}, "JSON path ('AMU', 'gib') is already 'AMU'"),
        ({"json": ("TT", "extra")}, "JSON group 'TT' holds 'TT''s value"),
        ({"json": ("MFU", "extra")}, "JSON group 'MFU' is 'MFU''s object"),
        ({"json": ("a", "b", "c")}, "json must be (group,) or (group, field)"),
        ({"export": "AMU gauge"}, "export name 'AMU gauge' must match"),
        ({"export": "effmon_aec_watts"}, "export name 'effmon_aec_watts' is already 'AEC''s"),
        ({"table": "sometimes"}, "table must be"),
        ({"window": "yesterday"}, "window must be"),
        ({"colour": "red"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_a_declaration_that_breaks_the_contract_is_refused_when_declared(scratch, kw, words):
    with pytest.raises(RegistryError, match=None) as err:
        _declare("broken_metric", **kw)
    assert words in str(err.value)
    assert "broken_metric" not in METRICS


def test_a_metric_declared_twice_and_needs_that_do_not_exist_are_errors(scratch):
    with pytest.raises(RegistryError, match="'AEC' declared twice"):
        _declare("AEC")
    _declare("needs_nothing_known", needs=("no_such_input",))
    scratch.append("needs_nothing_known")
    with pytest.raises(RegistryError, match=r"needs \['no_such_input'\]"):
        check_needs()


def test_a_new_json_group_is_made_not_dropped(scratch, phases_session):
    """The old exports had fixed group tuples: a metric in a new group vanished from the JSON silently."""
    _declare("gpu_count", json=("hardware_facts", "gpus"), needs=("gpus",))
    scratch.append("gpu_count")
    assert json_groups()[-1] == "hardware_facts"
    with SessionReader(phases_session) as r:
        s = evaluate(r, with_series=False)
    assert effmon_json(s)["hardware_facts"] == {"gpus": 1.0}
    assert efficientllm(s)["effmon"]["hardware_facts"] == {"gpus": 1.0}


def test_a_sub_row_sits_under_its_parent_and_is_indented_from_its_declaration(scratch, phases_session):
    """A sub-row is a ``parent=``, not a label with leading spaces: declared last, it is shown under its parent."""
    _declare("J_per_gpu", label="J/GPU", parent="energy_j", table="known", needs=("energy_j", "gpus"))
    scratch.append("J_per_gpu")
    order = [m.key for m in table_order()]
    children = [m.key for m in METRICS.values() if m.parent == "energy_j"]
    assert order.index("J_per_gpu") == order.index("energy_j") + len(children)  # the last of energy's sub-rows
    with SessionReader(phases_session) as r:
        rows = metric_rows(evaluate(r, with_series=False))
    labels = [label for label, _, _ in rows]
    assert labels[labels.index("energy") + 1 : labels.index("energy") + 7] == [
        "  J/token",
        "  J/sample",
        "  J/request",
        "  J/step",
        "  tokens/J",
        "  J/GPU",
    ]
    assert not [m.key for m in METRICS.values() if m.label != m.label.strip()]  # no label carries its indent


def tokens_per_watt(x):
    """Generated tokens per second per watt of average power."""
    it, aec = x["IT"], x["AEC"]
    return it / aec if it and aec else NA("needs IT and AEC")


class TokensPerWatt:
    """A third-party plugin, as a package would ship it."""

    __name__ = "tokens-per-watt"

    @hookimpl
    def effmon_register_metrics(self, register):
        register(
            "tokens_per_watt",
            tokens_per_watt,
            label="tokens/s/W",
            unit="tokens/s/W",
            better="higher",
            needs=("IT", "AEC"),
            json=("efficiency", "tokens_per_s_per_w"),
            family="energy",
            fmt=".3g",
            table="known",
            parent="energy_j",
            strip="{:.3g}",
            compare=True,
            export="effmon_tokens_per_second_per_watt",
        )


@pytest.fixture
def plugin():
    keys = add_plugin(TokensPerWatt(), "tokens-per-watt")
    yield keys
    remove_plugin(keys)


def test_a_plugins_metric_reaches_every_view(plugin, phases_session, tmp_path):
    from effmon.cli.sessions import _derived_metrics
    from effmon.report import compare
    from effmon.report.prometheus import SessionCollector

    assert plugin == ["tokens_per_watt"]
    with SessionReader(phases_session) as r:
        s = evaluate(r, with_series=False)
    expected = s.value("IT") / s.value("AEC")  # the plugin's arithmetic on the figures the report shows
    assert s.value("tokens_per_watt") == pytest.approx(expected)
    assert [row for row in metric_rows(s) if row[0] == "  tokens/s/W"] == [("  tokens/s/W", f"{expected:.3g}", "")]
    assert effmon_json(s)["efficiency"]["tokens_per_s_per_w"] == pytest.approx(expected)
    assert efficientllm(s)["effmon"]["efficiency"]["tokens_per_s_per_w"] == pytest.approx(expected)
    assert "tokens_per_watt" in [m.key for m in compare.axes()]
    assert compare.from_summary(s, "x")["values"]["tokens_per_watt"] == pytest.approx(expected)
    assert [m.key for m, _ in s.metrics("strip")].count("tokens_per_watt") == 1
    listed = {d["key"]: d for d in _derived_metrics()}["tokens_per_watt"]
    assert listed["needs"] == ["IT", "AEC"] and listed["declared_by"] == "plugin tokens-per-watt"
    collector = SessionCollector(phases_session)
    try:
        fams = {f.name: f for f in collector.collect()}
    finally:
        collector.close()
    [sample] = fams["effmon_tokens_per_second_per_watt"].samples
    assert sample.value == pytest.approx(expected)
    assert json.dumps(effmon_json(s))  # still JSON


def test_a_broken_plugin_is_reported_and_adds_nothing():
    class Broken:
        @hookimpl
        def effmon_register_metrics(self, register):
            register("half_declared", tokens_per_watt, label="half", unit="", better="lower", needs=("gpus",))
            register("refused", tokens_per_watt, label="x", unit="", better=None, needs=("gpus",), compare=True)

    class Failing:
        @hookimpl
        def effmon_register_metrics(self, register):
            raise RuntimeError("cannot import my library")

    before = len(PLUGIN_ERRORS)
    assert add_plugin(Broken(), "broken") == []
    assert add_plugin(Failing(), "failing") == []
    assert "half_declared" not in METRICS and "refused" not in METRICS  # all of a plugin's metrics, or none
    assert "plugin 'broken': its metrics were not added" in PLUGIN_ERRORS[before]
    assert "does not say which way is better" in PLUGIN_ERRORS[before]
    assert "RuntimeError: cannot import my library" in PLUGIN_ERRORS[before + 1]
    del PLUGIN_ERRORS[before:]


def test_a_plugin_metric_that_raises_is_na_with_its_error(phases_session):
    def boom(x):
        raise ZeroDivisionError("oops")

    mod = types.SimpleNamespace(
        effmon_register_metrics=lambda register: register(
            "boom", boom, label="boom", unit="", better="lower", needs=("gpus",), table="known"
        )
    )
    keys = add_plugin(mod, "boomer")
    try:
        with SessionReader(phases_session) as r:
            s = evaluate(r, with_series=False)
        assert s.value("boom") is None
        assert s.result("boom").reason == "plugin boomer failed: ZeroDivisionError: oops"
    finally:
        remove_plugin(keys)
