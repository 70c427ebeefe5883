"""vLLM /metrics: exposition text made by prometheus_client with vLLM's names, types and labels."""

import json
import socket

import pytest

pytest.importorskip("prometheus_client")

from effmon_vllm.metrics import MetricsFormatError, VllmMetricsSource, histogram_quantile, parse  # noqa: E402
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest  # noqa: E402

from effmon.plugins import SourceOptions  # noqa: E402
from tests.conftest import run_effmon  # noqa: E402

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LABELS = ["model_name", "engine"]


def registry(renamed: bool = False):
    """A registry shaped like vLLM's: two engines, current or deprecated names."""
    reg = CollectorRegistry()
    m = {
        "running": Gauge("vllm:num_requests_running", "running", LABELS, registry=reg),
        "waiting": Gauge("vllm:num_requests_waiting", "waiting", LABELS, registry=reg),
        "kv": Gauge("vllm:gpu_cache_usage_perc" if renamed else "vllm:kv_cache_usage_perc", "kv", LABELS, registry=reg),
        "prompt": Counter("vllm:prompt_tokens", "prompt", LABELS, registry=reg),
        "gen": Counter("vllm:generation_tokens", "gen", LABELS, registry=reg),
        "preempt": Counter("vllm:num_preemptions", "preemptions", LABELS, registry=reg),
        "ttft": Histogram("vllm:time_to_first_token_seconds", "ttft", LABELS, buckets=BUCKETS, registry=reg),
        "itl": Histogram(
            "vllm:time_per_output_token_seconds" if renamed else "vllm:inter_token_latency_seconds",
            "itl",
            LABELS,
            buckets=BUCKETS,
            registry=reg,
        ),
        "e2e": Histogram("vllm:e2e_request_latency_seconds", "e2e", LABELS, buckets=BUCKETS, registry=reg),
        "other": Gauge("vllm:some_future_metric", "unknown to effmon", LABELS, registry=reg),
    }
    return reg, m


def by_hand(observations, bounds=BUCKETS):
    """Cumulative bucket counts of a list of observations, computed here without effmon."""
    out = {b: float(sum(1 for x in observations if x <= b)) for b in bounds}
    out[float("inf")] = float(len(observations))
    return out


@pytest.mark.parametrize("renamed", [False, True], ids=["current-names", "deprecated-names"])
def test_counts_add_over_engines_gauges_stay_per_engine_and_both_names_work(renamed):
    reg, m = registry(renamed)
    for engine, running, kv, gen in (("0", 3, 0.25, 1000), ("1", 5, 0.5, 500)):
        labels = {"model_name": "m", "engine": engine}
        m["running"].labels(**labels).set(running)
        m["kv"].labels(**labels).set(kv)
        m["gen"].labels(**labels).inc(gen)
        for x in (0.02, 0.03, 0.2):
            m["itl"].labels(**labels).observe(x)
    values, hists, unknown, engines = parse(generate_latest(reg).decode())
    assert values["running"] == 8
    assert {k: e["kv_cache_usage"] for k, e in engines.items()} == {"0": 0.25, "1": 0.5}  # per engine, not 0.75
    assert values["generation_tokens_total"] == 1500
    assert hists["itl"] == by_hand([0.02, 0.03, 0.2] * 2)
    assert unknown == ["vllm:some_future_metric"]


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = by_hand([0.02] * 50 + [0.2] * 50)  # half in (0.01, 0.025], half in (0.1, 0.25]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.025)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.01 + (0.025 - 0.01) * 25 / 50)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.1 + (0.25 - 0.1) * (99 - 50) / 50)
    assert histogram_quantile(0.5, {}) is None


def test_window_percentiles_come_from_bucket_differences(monkeypatch):
    reg, m = registry()
    labels = {"model_name": "m", "engine": "0"}
    old = [0.02] * 100  # before the window
    new = [0.3, 0.4, 0.45, 0.6, 0.9]  # after
    for x in old:
        m["ttft"].labels(**labels).observe(x)
    src = VllmMetricsSource(SourceOptions(metrics_url="http://unused", window_s=30))
    texts = iter([generate_latest(reg).decode()])
    monkeypatch.setattr(src, "_fetch", lambda: next(texts))
    src.read("scrape", 1000.0)
    for x in new:
        m["ttft"].labels(**labels).observe(x)
    texts = iter([generate_latest(reg).decode()])
    monkeypatch.setattr(src, "_fetch", lambda: next(texts))
    row = src.read("scrape", 1010.0)[0].values
    assert row["ttft_p50_s"] == pytest.approx(histogram_quantile(0.5, by_hand(new)))
    assert row["ttft_p50_s"] > 0.25  # the old, fast requests are out of the window
    texts = iter([generate_latest(reg).decode()])
    monkeypatch.setattr(src, "_fetch", lambda: next(texts))
    row = src.read("scrape", 1050.0)[0].values  # the window (1020, 1050] holds no new request
    assert row["ttft_p50_s"] is None
    latest = [0.011, 0.012, 0.013]
    for x in latest:
        m["ttft"].labels(**labels).observe(x)
    texts = iter([generate_latest(reg).decode()])
    monkeypatch.setattr(src, "_fetch", lambda: next(texts))
    row = src.read("scrape", 1055.0)[0].values
    assert row["ttft_p50_s"] == pytest.approx(histogram_quantile(0.5, by_hand(latest)))


def test_malformed_text_is_a_clear_error():
    with pytest.raises(MetricsFormatError, match="malformed"):
        parse("vllm:num_requests_running{engine=0 3\n")


def attach_while(reg, home, feed, seconds: int = 4):
    """``effmon attach --url`` on a real /metrics endpoint serving ``reg`` for ``seconds``; ``feed()`` runs 2 s in
    (after the first scrapes). Returns the session file."""
    import os
    import subprocess
    import sys
    import time

    from prometheus_client import start_http_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, _ = start_http_server(port, addr="127.0.0.1", registry=reg)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "effmon", "attach", "--url", f"http://127.0.0.1:{port}", "--headless",
             "--duration", str(seconds)],
            env=dict(os.environ, EFFMON_HOME=str(home)), stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(2.0)
        feed()
        _, err = proc.communicate(timeout=30)
    finally:
        server.shutdown()
    assert proc.returncode == 0, err
    return sorted((home / "sessions").glob("*.effmon"))[0]


def test_attach_url_against_a_real_metrics_endpoint(tmp_path):
    reg, m = registry()
    labels = {"model_name": "m", "engine": "0"}
    m["running"].labels(**labels).set(2)
    m["ttft"].labels(**labels).observe(5.0)  # before attaching: outside every window effmon sees

    def feed():
        m["gen"].labels(**labels).inc(100)
        for x in (0.05, 0.07, 0.2):
            m["ttft"].labels(**labels).observe(x)

    session = attach_while(reg, tmp_path / "h", feed)
    from effmon.core.store import SessionReader

    with SessionReader(session) as r:
        rows = r.rows("serving")
        assert r.meta()["mode"] == "url"
    assert len(rows) >= 2 and rows[-1]["running"] == 2 and rows[-1]["generation_tokens_total"] == 100
    assert rows[-1]["ttft_p50_s"] == pytest.approx(histogram_quantile(0.5, by_hand([0.05, 0.07, 0.2])))


def test_attach_url_to_something_that_is_not_vllm(tmp_path):
    import http.server
    import threading

    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        res = run_effmon(
            "attach",
            "--url",
            f"http://127.0.0.1:{httpd.server_port}",
            "--headless",
            "--duration",
            "2",
            env_home=tmp_path / "h",
        )
    finally:
        httpd.shutdown()
    assert res.returncode == 2
    assert "HTTP 404" in res.stderr and "vLLM" in res.stderr and "Traceback" not in res.stderr
    assert json.dumps  # the session of the failed attach is kept (marked failed)
    assert list((tmp_path / "h" / "sessions").glob("*.effmon"))


def test_joules_per_generated_token_from_server_counters(tmp_path):
    """GPU energy over the window divided by the server's generated tokens, checked by hand."""
    from effmon.core.declare import CORE_ENTITIES, Row
    from effmon.core.store import SessionReader, SessionWriter
    from effmon.metrics import evaluate

    path = tmp_path / "s.effmon"
    w = SessionWriter(path, CORE_ENTITIES, {"name": "s", "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3"}]})
    rows = []
    for k in range(11):  # 10 s at 300 W, the server generating 50 tokens/s
        t = 100.0 + k
        rows.append(Row("gpu", {"t": t, "gpu": 0, "power_w": 300.0, "mem_used_bytes": 1, "mem_total_bytes": 2}))
        rows.append(Row("serving", {"t": t, "generation_tokens_total": 1000.0 + 50 * k}))
    w.write(rows)
    w.close()
    with SessionReader(path) as r:
        s = evaluate(r)
    assert s.server.generation_tokens == 500
    assert s.value("J_per_generated_token") == pytest.approx(300.0 * 10 / 500)
    assert s.value("IT") == pytest.approx(50.0) and s.run_kind == "inference"


def test_a_source_waiting_for_its_server_is_read_as_soon_as_asked():
    """effmon serve opens the /metrics source before the server is up; once healthy it is retried at once."""
    from effmon.core.clock import VirtualClock
    from effmon.core.sampler import Sampler

    src = VllmMetricsSource(SourceOptions(metrics_url="http://127.0.0.1:9/metrics", wait_for_server=True))
    assert src.open().meta["serving"]["metrics_url"].endswith("/metrics")
    clock = VirtualClock(0.0)
    sampler = Sampler([src], lambda rows: None, clock=clock)
    for t in (0.0, 1.0, 2.0, 3.0, 5.0):
        sampler.tick(t)
    state = sampler.channels[0][1]
    assert state.failures >= 3 and state.next_due > 5.0  # backing off: the server is not there
    sampler.retry_now("vllm_metrics")
    assert state.next_due <= clock.now()


def test_two_engines_are_shown_per_engine_never_summed(tmp_path):
    """A data-parallel server with two engines at 37% and 42% KV cache: the session keeps each engine, the
    dashboard shows their mean and the fullest (39.5%, 42.0%), never 79%; the queues add up and the longest is
    named. TTFT p99 from the histogram comes with the bucket it lies in, which holds the exact value."""
    from effmon.core.store import SessionReader
    from effmon.tui.snapshot import SessionView

    reg, m = registry()
    for engine, kv, running, waiting in (("0", 0.37, 6, 1), ("1", 0.42, 9, 4)):
        labels = {"model_name": "m", "engine": engine}
        m["kv"].labels(**labels).set(kv)
        m["running"].labels(**labels).set(running)
        m["waiting"].labels(**labels).set(waiting)
    ttfts = [0.03, 0.04, 0.06, 0.07, 0.08, 0.09, 0.118, 0.12, 0.13, 0.2]

    def feed():
        for i, x in enumerate(ttfts):
            m["ttft"].labels(model_name="m", engine=str(i % 2)).observe(x)

    session = attach_while(reg, tmp_path / "h", feed)
    with SessionReader(session) as r:
        last = r.rows("serving")[-1]
        engines = {e["engine"]: e for e in r.rows("serving_engine") if e["t"] == last["t"]}
    assert {k: (e["kv_cache_usage_pct"], e["running"], e["waiting"]) for k, e in engines.items()} == {
        "0": (pytest.approx(37.0), 6, 1),
        "1": (pytest.approx(42.0), 9, 4),
    }
    assert last["kv_cache_usage_pct"] == pytest.approx(39.5) and last["kv_cache_usage_max_pct"] == pytest.approx(42.0)
    assert (last["running"], last["waiting"], last["waiting_max"], last["engines"]) == (15, 5, 4, 2)
    # the p99 by the numbers: exact 0.2 (nearest rank of 10), the histogram can only say (0.1, 0.25]
    assert (last["ttft_p99_lo_s"], last["ttft_p99_hi_s"]) == (0.1, 0.25)
    assert last["ttft_p99_lo_s"] < sorted(ttfts)[-1] <= last["ttft_p99_hi_s"]
    view = SessionView(session)
    try:
        snap = view.snapshot(efficiency=False)
    finally:
        view.close()
    shown = dict(snap.throughput) | dict(snap.latency)
    assert shown["KV cache"] == "39.5% mean, 42.0% max of 2 engines"
    assert shown["running / waiting"] == "15 / 5 (longest queue 4)"
    assert shown["TTFT p50/95/99 (server)"].endswith("(p99 in 0.1–0.25 s)")
    assert "79" not in shown["KV cache"]


def test_histogram_bucket_bounds_hold_the_quantile():
    from effmon_vllm.metrics import histogram_bucket

    obs = [0.02, 0.03, 0.2, 0.3, 3.0]
    buckets = by_hand(obs)
    assert histogram_bucket(0.5, buckets)[1:] == (0.1, 0.25)  # the median, 0.2, lies in (0.1, 0.25]
    value, lo, hi = histogram_bucket(0.99, buckets)
    assert (value, lo, hi) == (2.5, 2.5, None)  # above the highest finite bound: only "over 2.5 s" is known
    assert histogram_bucket(0.5, {}) == (None, None, None)


def test_the_servers_own_prefill_and_decode_time_are_read_as_sums():
    """vLLM's request_queue/prefill/decode_time histograms: their _sum over every engine, in seconds (what a sweep
    cell's server-side prefill and decode time are the increase of)."""
    reg = CollectorRegistry()
    phases = {
        name: Histogram(f"vllm:request_{name}_time_seconds", name, LABELS, buckets=BUCKETS, registry=reg)
        for name in ("queue", "prefill", "decode")
    }
    observed = {"queue": [0.001, 0.002], "prefill": [0.03, 0.05, 0.04], "decode": [0.9, 1.4, 1.1]}
    for name, xs in observed.items():
        for engine in ("0", "1"):
            for x in xs:
                phases[name].labels(model_name="m", engine=engine).observe(x)
    values, _, unknown, _ = parse(generate_latest(reg).decode())
    for name, xs in observed.items():
        assert values[f"{name}_seconds_total"] == pytest.approx(2 * sum(xs))
    assert unknown == []


def test_a_sweep_cell_takes_the_servers_prefill_and_decode_increase(tmp_path):
    from effmon.core.declare import CORE_ENTITIES, Row
    from effmon.core.store import SessionReader, SessionWriter
    from effmon.report.sweep import server_phases

    path = tmp_path / "s.effmon"
    w = SessionWriter(path, CORE_ENTITIES, {"name": "s"})
    w.write(
        [Row("serving", {"t": 10.0 + k, "prefill_seconds_total": 2.0 + 0.5 * k, "decode_seconds_total": 7.0 + 1.5 * k})
         for k in range(9)]
    )  # fmt: skip
    w.close()
    with SessionReader(path) as r:
        got = server_phases(r, 11.5, 16.5)  # scrapes at 12 ... 16 fall inside
    assert got == {"server_prefill_s": 2.0, "server_decode_s": 6.0, "server_decode_share": 0.75}
