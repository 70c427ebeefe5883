"""EfficientLLM metrics against figures computed by hand from the real H100 trace."""

import itertools
import json
from importlib import resources

import jsonschema
import pytest

from effmon.core.store import SessionReader
from effmon.metrics import (
    IncrementalAggregation,
    MetricsError,
    Options,
    evaluate,
    mcr,
    precision_bits,
    resolve_window,
    so_far,
)
from effmon.report.formats import efficientllm, effmon_json
from tests.conftest import PHASES_TRACE, trace_lines

GIB = 2**30


def gpu_lines():
    return [x for x in trace_lines() if x["kind"] == "gpu"]


def phase_bounds(name):
    """A phase runs from the first to the last time stamp of anything labelled with it."""
    times = []
    for x in trace_lines():
        if x.get("phase") != name:
            continue
        times += [x["t"]] if x["kind"] == "gpu" else [x["t_start"], x["t_end"]]
    return min(times), max(times)


def hand_average(field, a, b, rows=None):
    """Trapezoid over the samples in [a, b], with the value at a window edge that falls between two
    samples taken on the straight line between them."""
    rows = [x for x in (rows or gpu_lines()) if x.get(field) is not None]
    pts = [(x["t"], x[field]) for x in rows]

    def at(t):
        for (t0, v0), (t1, v1) in itertools.pairwise(pts):
            if t0 <= t <= t1:
                return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        raise AssertionError("edge outside the samples")

    inner = [(t, v) for t, v in pts if a < t < b]
    seq = [(a, at(a))] + inner + [(b, at(b))]
    area = sum((seq[i][1] + seq[i + 1][1]) / 2 * (seq[i + 1][0] - seq[i][0]) for i in range(len(seq) - 1))
    return area / (b - a)


def summary(session, phase=None, window=None, **options):
    """The effmon JSON document of a window (what `effmon report --format json` prints)."""
    with SessionReader(session) as r:
        return effmon_json(evaluate(r, resolve_window(r, window, phase), options=Options(**options)))


def test_aec_of_the_matmul_phase(phases_session):
    a, b = phase_bounds("matmul_bf16")
    s = summary(phases_session, "matmul_bf16")
    expected = hand_average("power_w", a, b)
    assert s["AEC"]["watts"] == pytest.approx(expected, rel=1e-9)
    assert 600 < expected < 730  # a bf16 burn near the 700 W limit
    assert s["AEC"]["energy_integrated_j"] == pytest.approx(expected * (b - a), rel=1e-9)


def test_amu_of_the_finetune_phase(phases_session):
    a, b = phase_bounds("lora_finetune")
    s = summary(phases_session, "lora_finetune")
    expected = hand_average("mem_used_bytes", a, b)
    assert s["AMU"]["gib"] == pytest.approx(expected / GIB, rel=1e-9)
    assert s["AMU"]["fraction"] == pytest.approx(expected / 85520809984, rel=1e-9)
    assert s["run_kind"] == "training"


def test_pcu_from_sm_activity_and_from_nvml_utilisation_in_the_generate_phase(phases_session):
    a, b = phase_bounds("generate")
    s = summary(phases_session, "generate")
    sm = hand_average("sm_active_pct", a, b) / 100
    util = hand_average("util_gpu_pct", a, b) / 100
    assert s["PCU"]["source"] == "nvml_gpm_sm_active"
    assert s["PCU"]["value"] == pytest.approx(sm, rel=1e-9)
    assert s["PCU"]["nvml_utilization"] == pytest.approx(util, rel=1e-9)
    assert util / sm > 2.5  # the two readings differ several-fold: both must be right
    assert s["PCU"]["tensor_active"] == pytest.approx(hand_average("tensor_active_pct", a, b) / 100, rel=1e-9)


def test_integrated_energy_against_the_counter_over_the_whole_trace(phases_session):
    s = summary(phases_session)
    lines = gpu_lines()
    counter = lines[-1]["energy_j"] - lines[0]["energy_j"]
    assert s["AEC"]["energy_counter_j"] == pytest.approx(counter, rel=1e-9)
    assert abs(s["AEC"]["energy_integrated_j"] - counter) / counter < 2.5e-4
    assert s["AEC"]["energy_source"] == "nvml_energy_counter"


def test_throughput_and_latency_of_the_finetune_and_generate_phases(phases_session):
    steps = [x for x in trace_lines() if x["kind"] == "train_step"]
    params = 852559872
    total_time = sum(x["t_end"] - x["t_start"] for x in steps)
    s = summary(phases_session, "lora_finetune")
    assert s["training"]["steps"] == len(steps)
    assert s["AL"]["value"] == pytest.approx(total_time / len(steps), rel=1e-9)
    assert s["TT"] == pytest.approx(sum(x["tokens"] for x in steps) / params / total_time, rel=1e-9)
    assert s["ST"] == pytest.approx(sum(x["samples"] for x in steps) / params / total_time, rel=1e-9)
    batches = [x for x in trace_lines() if x["kind"] == "generate_batch"]
    g = summary(phases_session, "generate")
    busy = sum(x["t_end"] - x["t_start"] for x in batches)  # batches run one after another
    assert g["run_kind"] == "inference"
    assert g["IT"] == pytest.approx(sum(x["requests"] * x["new_tokens_each"] for x in batches) / busy, rel=1e-6)
    assert g["inference"]["requests"] == 80
    assert g["AL"]["value"] == pytest.approx(sum((x["t_end"] - x["t_start"]) * 16 for x in batches) / 80, rel=1e-9)


def test_irregular_sampling_moves_time_weighted_results_only_by_sampling_error(tmp_path, phases_session, monkeypatch):
    monkeypatch.setenv("EFFMON_HOME", str(tmp_path))
    lines = PHASES_TRACE.read_text().splitlines()
    kept, n = [], 0
    for line in lines:
        if '"kind": "gpu"' in line:
            n += 1
            if n % 3 == 0:
                continue
        kept.append(line)
    sparse = tmp_path / "sparse.jsonl"
    sparse.write_text("\n".join(kept) + "\n")
    from effmon.core.sessions import resolve
    from effmon.recording import RecordOptions, record_replay

    assert record_replay(str(sparse), RecordOptions(name="sparse", quiet=True), as_fast_as_possible=True) == 0
    thin = resolve("sparse")
    for phase, pick, tol in (
        ("matmul_bf16", lambda s: s["AEC"]["watts"], 0.02),
        ("lora_finetune", lambda s: s["AMU"]["gib"], 0.02),
        ("generate", lambda s: s["PCU"]["value"], 0.05),
        (None, lambda s: s["AEC"]["energy_integrated_j"], 0.005),
    ):
        full_v, thin_v = pick(summary(phases_session, phase)), pick(summary(thin, phase))
        assert thin_v == pytest.approx(full_v, rel=tol), phase


def test_schema_rejects_a_broken_record(phases_session):
    schema = json.loads((resources.files("effmon") / "schemas" / "efficientllm.schema.json").read_text())
    with SessionReader(phases_session) as r:
        doc = efficientllm(evaluate(r, resolve_window(r, None, "generate")))
    del doc["time_series"]["power_consumption"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


def test_mcr_reproduces_the_published_row():
    assert round(mcr(precision_bits("bf16"), precision_bits("int4"), 0.4719, 0.4361), 4) == 3.6965
    assert precision_bits("AWQ") == 4 and precision_bits("fp8") == 8


def test_window_is_relative_to_the_session_start(phases_session):
    with SessionReader(phases_session) as r:
        lo, hi = r.time_range()
        w = resolve_window(r, "10:20")
        assert (w.start, w.end) == (lo + 10, lo + 20)
        w = resolve_window(r, ":-5")
        assert w.end == pytest.approx(hi - 5)
        with pytest.raises(MetricsError):
            resolve_window(r, "30:10")


PICKS = (
    lambda s: s.value("AMU"),
    lambda s: s.value("PCU"),
    lambda s: s.value("AEC"),
    lambda s: s.value("energy_integrated_j"),
    lambda s: s.value("energy_counter_j"),
    lambda s: s.value("tensor_active"),
    lambda s: s.value("AL"),
    lambda s: s.value("J_per_step"),
    lambda s: s.gpus[0].power_max_w,
    lambda s: s.gpus[0].samples,
    lambda s: s.gpus[0].throttle_s,
    lambda s: s.gpus[0].sm_clock_avg_mhz,
)


def test_incremental_aggregation_gives_the_same_numbers_as_the_exact_one(phases_session):
    """The dashboard's running metrics (extended each refresh) equal a from-scratch evaluation, to the bit,
    at window ends that fall between samples and repeat."""
    with SessionReader(phases_session) as r:
        agg = IncrementalAggregation(r)
        lo, hi = r.time_range()
        for end in (lo + 5, lo + 20.05, lo + 47.3, lo + 47.3, lo + 80, hi):
            fast = evaluate(r, so_far(lo, end), aggregation=agg, with_series=False)
            full = evaluate(r, so_far(lo, end), with_series=False)
            for pick in PICKS:
                assert pick(fast) == pick(full)


def test_incremental_aggregation_refuses_windows_it_cannot_answer(phases_session):
    with SessionReader(phases_session) as r:
        lo, hi = r.time_range()
        agg = IncrementalAggregation(r)
        evaluate(r, so_far(lo, lo + 30), aggregation=agg, with_series=False)
        with pytest.raises(ValueError, match="back in time"):
            evaluate(r, so_far(lo, lo + 10), aggregation=agg, with_series=False)
        with pytest.raises(ValueError, match="session start"):
            evaluate(r, resolve_window(r, "10:20"), aggregation=IncrementalAggregation(r), with_series=False)


def test_incremental_aggregation_stays_exact_and_flat_over_a_long_session(tmp_path):
    """Over a long session the running sums hold no consumed rows: same numbers, bounded memory."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.synth import make_session

    session = make_session(tmp_path / "long.effmon", gpus=2, seconds=1500)
    with SessionReader(session) as r:
        agg = IncrementalAggregation(r)
        lo, hi = r.time_range()
        for end in [lo + 30 * k for k in range(1, 50)] + [hi]:
            fast = evaluate(r, so_far(lo, end), aggregation=agg, with_series=False)
        full = evaluate(r, so_far(lo, hi), with_series=False)
        held = sum(len(i.pending or ()) for i in agg._instances["gpu"].values())  # noqa: SLF001
    assert held < 2000  # the 30,000 GPU rows were folded into running sums, only the look-ahead is kept
    for pick in PICKS:
        assert pick(fast) == pytest.approx(pick(full), rel=1e-12)
