"""The load summary on fixed request results (no server): every figure by hand arithmetic, the registry's figures
of the same requests beside the wall-time ones, and the terminal rendering."""

import io
import json

import pytest
from rich.console import Console

from effmon.serving.load import LoadConfig, LoadSummary, RequestResult, summarize, verdict


def results():
    """Four requests of 0.5 s (two overlapping), one failed, one cancelled, over a 4 s run."""
    ok = [
        RequestResult(0.0, 0.5, ttft_s=0.1, gaps=[0.1] * 4, chunks=5, output_tokens=5, tokens_from="usage"),
        RequestResult(0.25, 0.75, ttft_s=0.2, gaps=[0.075] * 4, chunks=5, output_tokens=5, tokens_from="usage"),
        RequestResult(2.0, 2.5, ttft_s=0.3, gaps=[0.05] * 4, chunks=5, output_tokens=5, tokens_from="usage"),
        RequestResult(3.0, 3.5, ttft_s=0.4, gaps=[0.025] * 4, chunks=5, output_tokens=5, tokens_from="usage"),
    ]
    failed = RequestResult(1.0, 1.1, error="http_500", detail="Internal Server Error")
    cancelled = RequestResult(3.5, 3.6, error="cancelled")
    return [*ok, failed, cancelled]


def test_the_summary_by_hand():
    cfg = LoadConfig(url="http://127.0.0.1:1", slo_ttft_s=0.25, max_failures=0.1)
    s = summarize(results(), 4.0, cfg)
    assert isinstance(s, LoadSummary)
    assert (s.requests, s.succeeded, s.failed, s.cancelled) == (6, 4, 1, 1)
    assert s.failure_share == pytest.approx(1 / 5)
    assert s.errors == {"http_500": 1}
    # over the run's wall time, as vllm bench serve states it
    assert s.request_throughput == pytest.approx(4 / 4.0)
    assert s.output_token_throughput == pytest.approx(20 / 4.0)
    # the registry's figures of the same requests: over the 1.75 s a request was in flight (0-0.75, 2-2.5, 3-3.5)
    assert s.figures["generated_tokens_per_s"] == pytest.approx(20 / 1.75)
    assert s.figures["requests_per_s"] == pytest.approx(4 / 1.75)
    # percentiles, linear interpolation: TTFT 0.1 0.2 0.3 0.4
    assert s.latency["ttft_s"].p50 == pytest.approx(0.25) == s.figures["TTFT_p50"]
    assert s.latency["ttft_s"].p99 == pytest.approx(0.397) == pytest.approx(s.figures["TTFT_p99"])
    assert s.latency["e2e_s"].mean == pytest.approx(0.5) == s.figures["E2E_p50"]
    assert s.latency["tpot_s"].p50 == pytest.approx((0.5 - 0.25) / 4)
    assert s.goodput.requests == 2 and s.goodput.requests_per_s == pytest.approx(2 / 4.0)  # TTFT 0.1 and 0.2
    assert s.first_error == "http_500: Internal Server Error"
    assert verdict(s) == "1 of 5 requests failed (20%, more than --max-failures 10%): http_500 1"


def test_the_json_document_keeps_its_shape():
    doc = summarize(results(), 4.0, LoadConfig(url="http://x")).to_json()
    assert doc["ttft_s"]["p50"] == pytest.approx(0.25)  # latencies at the top level, as -o has always written
    assert doc["goodput"]["slo_ttft_s"] is None
    assert set(doc["figures"]) >= {"generated_tokens_per_s", "TTFT_p50"}
    assert json.loads(json.dumps(doc)) == doc


def test_no_success_and_no_tokens():
    s = summarize([RequestResult(0.0, 0.1, error="connect", detail="refused")], 1.0, LoadConfig(url="http://x"))
    assert verdict(s) == "no request succeeded"
    assert s.figures["generated_tokens_per_s"] is None and s.latency["ttft_s"].p50 is None
    chunks_only = [RequestResult(0.0, 1.0, ttft_s=0.2, gaps=[0.4, 0.4], chunks=3)]
    s = summarize(chunks_only, 1.0, LoadConfig(url="http://x", slo_tpot_s=0.1))
    assert s.output_tokens is None and s.output_token_throughput is None
    assert s.goodput.requests is None and "per token" in s.goodput.why_not
    assert s.itl_measured.startswith("per chunk only")


def test_rendered_on_the_terminal(monkeypatch):
    from effmon.cli import loadview

    buf = io.StringIO()
    monkeypatch.setattr("rich.console.Console", lambda: Console(file=buf, width=120))
    loadview.print_load_summary(summarize(results(), 4.0, LoadConfig(url="http://x", slo_ttft_s=0.25)))
    text = buf.getvalue()
    assert "effmon load — 4 of 6 requests succeeded in 4.0 s" in text
    assert "throughput over the run's 4.0 s: 1.00 requests/s, 5.0 output tokens/s" in text
    assert "while a request was in flight (as effmon report says): IT 11.4 generated tokens/s, 2.29 requests/s" in text
    assert "goodput: 2 requests within the SLO, 0.50/s" in text
    assert "failed (not in the latency figures): http_500 1" in text
    assert "cancelled when the load was stopped: 1" in text
