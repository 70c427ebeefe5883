"""The load generator against a real streaming server on 127.0.0.1 with known injected delays."""

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("aiohttp")

from effmon.core.store import SessionReader  # noqa: E402
from effmon.metrics.series import percentile  # noqa: E402
from effmon.serving.load import LoadConfig, run_load, summarize  # noqa: E402
from tests.conftest import REPO, run_effmon  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(request):
    """Start tests/openai_server.py in its own process; yields its base URL."""
    args = getattr(request, "param", {})
    port = free_port()
    cmd = [sys.executable, "-m", "tests.openai_server", "--port", str(port)]
    for key, value in args.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(proc.stdout.read())
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("server", [{"ttft": 0.1, "itl": 0.05}], indirect=True)
def test_ttft_and_itl_within_2ms_at_100_concurrent_streams(server):
    # Poisson arrivals at 115/s for requests lasting ~0.85 s keep ~100 streams in flight without the
    # synchronised bursts of a closed loop (those queue in the server: real latency, not client error).
    cfg = LoadConfig(url=server, rate=115, concurrency=0, requests=400, output_tokens=16)
    results, wall = asyncio.run(run_load(cfg))
    s = summarize(results, wall, cfg)
    assert s["succeeded"] == 400
    served = json.loads(urllib.request.urlopen(server + "/stats").read())
    # the client's own accuracy: its TTFT against what the server did for that very request
    errors = [
        abs(r.ttft_s - (served[r.response_id]["first_content"] - served[r.response_id]["received"])) for r in results
    ]
    assert percentile(errors, 50) < 0.002
    # against the injected values
    assert abs(s["itl_s"]["p50"] - 0.05) < 0.002
    assert abs(s["tpot_s"]["p50"] - 0.05) < 0.002
    assert abs(s["ttft_s"]["p50"] - 0.1) < 0.003  # + HTTP and JSON on a 2-core machine (see docs/benchmarks.md)
    mid = (min(r.t_start for r in results) + max(r.t_end for r in results)) / 2
    in_flight = sum(1 for r in results if r.t_start <= mid <= r.t_end)
    assert in_flight >= 80  # it really was ~100 concurrent streams (in the middle of the run)
    assert s["tokens_counted_from"] == "usage" and s["output_tokens"] == 400 * 16


@pytest.mark.parametrize("server", [{"ttft": 0.02, "itl": 0.005, "fail-every": 5, "cut-every": 7}], indirect=True)
def test_failed_and_cut_off_requests_are_counted_apart(server, tmp_path):
    home = tmp_path / "h"
    res = run_effmon(
        "load",
        server,
        "--concurrency",
        "4",
        "--requests",
        "70",
        "--output-tokens",
        "8",
        "--json",
        str(tmp_path / "s.json"),
        "--max-failures",
        "50%",  # the server fails a third of them on purpose
        env_home=home,
    )
    assert res.returncode == 0, res.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["errors"]["http_500"] == 14  # every 5th of 70
    assert s["errors"]["cut_off"] >= 8  # every 7th that was not already a failure
    assert s["succeeded"] + s["failed"] == 70
    assert s["e2e_s"]["p50"] > 0.02 + 6 * 0.005  # cut-off requests (shorter) do not pull it down
    assert "failed (not in the latency figures)" in res.stdout
    report = json.loads(run_effmon("report", "last", "-f", "json", env_home=home).stdout)
    assert report["inference"]["requests"] == s["succeeded"]
    assert report["inference"]["failed"] == s["failed"]


@pytest.mark.parametrize("server", [{"ttft": 0.03, "itl": 0.01}], indirect=True)
def test_goodput_under_an_slo_and_completions_endpoint(server, tmp_path):
    res = run_effmon(
        "load",
        server,
        "--endpoint",
        "completions",
        "--concurrency",
        "8",
        "--requests",
        "40",
        "--output-tokens",
        "8",
        "--slo",
        "ttft=20ms,tpot=50ms",
        "--json",
        str(tmp_path / "a.json"),
        env_home=tmp_path / "h",
    )
    assert res.returncode == 0, res.stderr
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["succeeded"] == 40 and a["goodput"]["requests"] == 0  # TTFT is 30 ms > 20 ms
    res = run_effmon(
        "load",
        server,
        "--concurrency",
        "8",
        "--requests",
        "40",
        "--output-tokens",
        "8",
        "--slo",
        "ttft=200ms,tpot=50ms",
        "--json",
        str(tmp_path / "b.json"),
        env_home=tmp_path / "h",
    )
    assert json.loads((tmp_path / "b.json").read_text())["goodput"]["requests"] == 40


def test_a_url_with_no_server_fails_clearly(tmp_path):
    res = run_effmon("load", f"http://127.0.0.1:{free_port()}", "--requests", "3", env_home=tmp_path / "h")
    assert res.returncode == 1
    assert "nothing answers at" in res.stderr and "is the server up?" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_server_that_is_not_openai_fails_clearly(tmp_path):
    import http.server
    import threading

    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        res = run_effmon("load", f"http://127.0.0.1:{httpd.server_port}", "--requests", "2", env_home=tmp_path / "h")
    finally:
        httpd.shutdown()
    assert res.returncode == 1
    assert "HTTP 501" in res.stderr and "OpenAI-compatible" in res.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["not-a-url"], "is not an http(s) URL"),
        (["http://127.0.0.1:1", "--slo", "ttft=fast"], "--slo"),
        (["http://127.0.0.1:1", "--prompts", "/no/such.jsonl"], "no such file"),
    ],
)
def test_bad_load_input(tmp_path, args, words):
    res = run_effmon("load", *args, env_home=tmp_path / "h")
    assert res.returncode == 2 and words in res.stderr


@pytest.mark.parametrize("server", [{"ttft": 0.0, "itl": 0.0}], indirect=True)
def test_prompts_file_and_session_rows(server, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"question {i}"}) for i in range(5)) + "\n")
    home = tmp_path / "h"
    res = run_effmon(
        "load", server, "--prompts", str(prompts), "--requests", "10", "--output-tokens", "4", env_home=home
    )
    assert res.returncode == 0, res.stderr
    session = sorted((home / "sessions").glob("*.effmon"))[0]
    with SessionReader(session) as r:
        rows = r.rows("request")
        assert r.meta()["run_kind"] == "inference" and r.meta()["load_summary"]["succeeded"] == 10
    assert len(rows) == 10 and all(x["generated_tokens"] == 4 and x["ttft_s"] is not None for x in rows)
