"""The load generator against a real streaming server on 127.0.0.1 with known injected delays."""

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("aiohttp")

from effmon.core.store import SessionReader  # noqa: E402
from effmon.metrics.series import percentile  # noqa: E402
from effmon.serving.clientwatch import ClientWatch  # noqa: E402
from effmon.serving.load import LoadConfig, run_load, summarize  # noqa: E402
from tests.conftest import free_port, run_effmon  # noqa: E402


@pytest.mark.parametrize("server", [{"ttft": 0.1, "itl": 0.05}], indirect=True)
def test_ttft_and_itl_within_2ms_at_100_concurrent_streams(server):
    # Poisson arrivals at 115/s for requests lasting ~0.85 s keep ~100 streams in flight without the
    # synchronised bursts of a closed loop (those queue in the server: real latency, not client error).
    cfg = LoadConfig(url=server, rate=115, concurrency=0, requests=400, output_tokens=16)
    watch = ClientWatch()
    results, wall = asyncio.run(run_load(cfg, watch=watch))
    s = summarize(results, wall, cfg, watch.report(sum(r.chunks for r in results), 100)).to_json()
    assert s["succeeded"] == 400
    # The 2 ms holds on a machine with a core for each side; on a busy one (another test run, two CPU-bound loops)
    # both event loops run late. Each measures its own lag (effmon's client watch, and the server's, at /lag): the
    # bound is 2 ms plus those measured delays, never a fixed wall-clock figure a busy machine can break.
    server_lag = json.loads(urllib.request.urlopen(server + "/lag").read())["p90"]
    lag = (s["client"]["loop_lag_p90_s"] or 0.0) + server_lag  # how late each loop ran, 9 times in 10
    served = json.loads(urllib.request.urlopen(server + "/stats").read())
    # the client's own accuracy: its TTFT against what the server did for that very request
    truth = [served[r.response_id] for r in results]
    errors = [abs(r.ttft_s - (t["first_content"] - t["received"])) for r, t in zip(results, truth, strict=True)]
    send = s["client"]["send_delay_p90_s"] or 0.0
    assert percentile(errors, 50) < 0.002 + lag + send
    # the figures against what the server really did (on a quiet machine that is the injected 100 ms and 50 ms; on
    # a busy one the server's own sleeps run late, which is the server's doing, not the client's)
    true_ttft = percentile([t["first_content"] - t["received"] for t in truth], 50)
    true_tpot = percentile([(t["last_content"] - t["first_content"]) / (t["tokens"] - 1) for t in truth], 50)
    assert abs(s["ttft_s"]["p50"] - true_ttft) < 0.003 + lag + send  # + HTTP and JSON (see docs/benchmarks.md)
    assert abs(s["tpot_s"]["p50"] - true_tpot) < 0.002 + lag
    assert abs(s["itl_s"]["p50"] - true_tpot) < 0.002 + lag
    assert abs(true_ttft - 0.1) < 0.05 and abs(true_tpot - 0.05) < 0.02  # the server did inject what was asked
    events = sorted([(r.t_start, 1) for r in results] + [(r.t_end, -1) for r in results])
    in_flight = max(itertools.accumulate(step for _, step in events))
    assert in_flight >= 80  # it really was ~100 concurrent streams (at its fullest: a starved client sends late)
    assert s["tokens_counted_from"] == "the server's usage" and s["output_tokens"] == 400 * 16


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


# -- tokens the server does not count, ITL per token, a client that knows its limits ----------------------------
@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory):
    """A model folder whose tokenizer knows the test server's tokens (the words t0 … t4095), as a user's
    model folder would: tokenizer.json written by the tokenizers library, nothing downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("model")
    vocab = {f"t{i}": i for i in range(4096)} | {"[UNK]": 4096}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def served(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url + "/stats").read())


def load_json(url, tmp_path, *args, name="s.json"):
    res = run_effmon("load", url, "--model", "m", *args, "--json", str(tmp_path / name), env_home=tmp_path / "h")
    assert res.returncode == 0, res.stderr
    return json.loads((tmp_path / name).read_text()), res.stdout


SEVERAL_A_CHUNK = {"ttft": 0.1, "itl": 0.02, "tokens-per-chunk": "2-3", "no-usage": True, "done": True}


@pytest.mark.parametrize("server", [SEVERAL_A_CHUNK], indirect=True)
def test_without_usage_the_tokenizer_counts_tokens_and_itl_is_per_token(server, tmp_path, word_tokenizer):
    """2–3 tokens a chunk, no usage, a [DONE] line: with the model's tokenizer the tokens are exactly what the
    server sent, ITL per token is the injected 20 ms (per chunk it is 40–60 ms), TPOT is 20 ms."""
    s, out = load_json(server, tmp_path, "--concurrency", "4", "--requests", "12", "--output-tokens", "32",
                       "--tokenizer", str(word_tokenizer))  # fmt: skip
    truth = served(server)
    assert s["succeeded"] == 12
    assert s["output_tokens"] == sum(x["tokens"] for x in truth.values()) == 12 * 32
    assert s["chunks"] == sum(x["chunks"] for x in truth.values()) < s["output_tokens"] * 0.5
    assert s["tokens_counted_from"] == "the model's tokenizer"
    assert abs(s["itl_s"]["p50"] - 0.020) < 0.002 and abs(s["itl_s"]["mean"] - 0.020) < 0.002
    assert s["itl_chunk_s"]["p50"] >= 0.038  # 2 or 3 tokens of 20 ms
    assert abs(s["tpot_s"]["p50"] - 0.020) < 0.001
    assert s["itl_measured"].startswith("per token")
    assert "ITL (per token)" in out and "ITL (per chunk)" in out
    with SessionReader(sorted((tmp_path / "h" / "sessions").glob("*.effmon"))[0]) as r:
        rows = r.rows("request")
    assert {(x["generated_tokens"], x["tokens_from"]) for x in rows} == {(32, "tokenizer")}
    assert all(abs(x["itl_token_mean_s"] - 0.020) < 0.002 for x in rows)


@pytest.mark.parametrize("server", [SEVERAL_A_CHUNK], indirect=True)
def test_without_usage_or_tokenizer_chunks_are_never_called_tokens(server, tmp_path):
    s, out = load_json(server, tmp_path, "--concurrency", "4", "--requests", "8", "--output-tokens", "32",
                       "--tokenizer", "none", "--slo", "ttft=1s,tpot=50ms")  # fmt: skip
    truth = served(server)
    assert s["output_tokens"] is None and s["output_token_throughput"] is None
    assert s["chunks"] == sum(x["chunks"] for x in truth.values())
    assert s["tpot_s"]["p50"] is None and s["itl_s"]["p50"] is None  # per-token figures need tokens
    assert s["itl_chunk_s"]["p50"] >= 0.038
    assert s["tokens_counted_from"].startswith("not counted") and "--tokenizer" in s["tokens_counted_from"]
    assert s["goodput"]["requests"] is None and "per token" in s["goodput"]["why_not"]
    assert "output tokens not counted" in out and "chunks/s" in out and "goodput: not checked" in out
    home = tmp_path / "h"
    with SessionReader(sorted((home / "sessions").glob("*.effmon"))[0]) as r:
        rows = r.rows("request")
    assert all(x["generated_tokens"] is None and x["chunks"] >= 12 for x in rows)
    report = json.loads(run_effmon("report", "last", "-f", "json", env_home=home).stdout)
    assert report["inference"]["generated_tokens"] is None and report["inference"]["requests"] == 8
    table = run_effmon("report", "last", env_home=home)
    assert table.returncode == 0 and "tokens not counted" in table.stdout


@pytest.mark.parametrize("server", [SEVERAL_A_CHUNK | {"tokenize": True}], indirect=True)
def test_without_usage_the_servers_tokenize_counts_tokens(server, tmp_path):
    s, _ = load_json(server, tmp_path, "--concurrency", "4", "--requests", "8", "--output-tokens", "32")
    assert s["output_tokens"] == 8 * 32 and s["tokens_counted_from"] == "the server's /tokenize"
    assert abs(s["tpot_s"]["p50"] - 0.020) < 0.001
    assert s["itl_s"]["p50"] is None  # a total gives no tokens per chunk: ITL stays per chunk
    assert s["itl_measured"].startswith("per chunk only")


@pytest.mark.parametrize("server", [{"ttft": 0.05, "itl": 0.01, "done": True}], indirect=True)
def test_usage_and_a_done_line_one_token_a_chunk(server, tmp_path):
    s, _ = load_json(server, tmp_path, "--concurrency", "2", "--requests", "6", "--output-tokens", "16")
    assert s["succeeded"] == 6 and s["output_tokens"] == 6 * 16 and s["tokens_counted_from"] == "the server's usage"
    assert s["itl_s"]["p50"] == s["itl_chunk_s"]["p50"] and abs(s["itl_s"]["p50"] - 0.01) < 0.002


def test_per_token_gaps_by_exact_arithmetic():
    from effmon.serving.tokens import per_token_gaps

    # chunks of 1, 2, 0, 3 tokens; gaps before chunks 2, 3, 4 of 40, 10, 50 ms
    assert per_token_gaps([0.04, 0.01, 0.05], [1, 2, 0, 3]) == pytest.approx([0.02, 0.02, 0.02, 0.02, 0.02])
    assert per_token_gaps([], [4]) == []


def test_a_token_spanning_two_chunks_belongs_to_the_chunk_that_completed_it(word_tokenizer):
    from effmon.serving.tokens import LocalTokenizer

    tok = LocalTokenizer(word_tokenizer)
    assert tok.chunk_counts([" t1 t", "2 t3", " t4"]) == [1, 2, 1]
    assert tok.chunk_counts([" t1", " "]) == [1, 0]


def test_a_bad_tokenizer_is_a_clear_error_before_any_request(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    for arg, words in ((str(tmp_path / "nothing"), "no tokenizer.json there"),
                       (str(tmp_path / "broken"), "not a tokenizer file")):  # fmt: skip
        res = run_effmon("load", "http://127.0.0.1:1", "--model", "m", "--tokenizer", arg, env_home=tmp_path / "h")
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr
        assert not (tmp_path / "h" / "sessions").exists() or not list((tmp_path / "h" / "sessions").iterdir())


@pytest.mark.parametrize("server", [{"ttft": 0.05, "itl": 0.005}], indirect=True)
def test_a_saturated_client_says_so_and_a_light_load_does_not(server, tmp_path):
    """More streams than one event loop on this machine can follow: the summary, the table and the session say
    the client was the bottleneck; at 4 streams they do not."""
    light, out = load_json(server, tmp_path, "--concurrency", "4", "--duration", "3", "--output-tokens", "32",
                           name="light.json")  # fmt: skip
    assert light["client"]["saturated"] is False and "saturated" not in out
    heavy, out = load_json(server, tmp_path, "--concurrency", "600", "--duration", "8", "--output-tokens", "32",
                           name="heavy.json")  # fmt: skip
    c = heavy["client"]
    assert c["saturated"] is True and c["saturated_share"] > 0.05, c
    assert c["loop_lag_p99_s"] > 0.005
    # Its own CPU per chunk set the limit (an estimate below the streams driven), unless other processes on a
    # busy machine held the CPU: then no estimate at all, and the warning says the machine was busy.
    if c["limited_by"] == "client":
        assert c["streams_capacity"] and c["streams_capacity"] < 600
    else:
        assert c["limited_by"] == "machine" and c["streams_capacity"] is None and "machine was busy" in out
    assert "the client was saturated" in out.replace("\n", " ") and "*" in out
    assert c["affected"].get("ttft_s")  # the figures its delay can move are marked
    with SessionReader(sorted((tmp_path / "h" / "sessions").glob("*.effmon"))[-1]) as r:
        assert r.meta()["load_summary"]["client"]["saturated"] is True
        assert any("client was saturated" in text for _, _, text in r.notices())


@pytest.mark.parametrize("server", [{"ttft": 0.05, "itl": 0.02}], indirect=True)
def test_a_client_starved_of_cpu_blames_the_machine_and_guesses_no_capacity(server, tmp_path):
    """Four light streams, but the client gets the CPU only 40% of the time (held off the CPU by SIGSTOP for
    0.3 s of every 0.5 s, as a machine whose cores other jobs hold would): its loop runs late while using little
    CPU, so the summary blames a busy machine and gives no streams estimate (its own cost was not the limit)."""
    env = dict(os.environ, EFFMON_HOME=str(tmp_path / "h"), COLUMNS="120")
    cmd = [sys.executable, "-m", "effmon", "load", server, "--model", "m", "--concurrency", "4", "--duration", "6",
           "--output-tokens", "16", "--json", str(tmp_path / "s.json")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not served(server):
            time.sleep(0.05)  # the load is under way: its first requests reached the server
        for _ in range(10):
            proc.send_signal(signal.SIGSTOP)
            time.sleep(0.3)
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.2)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    c = json.loads((tmp_path / "s.json").read_text())["client"]
    assert c["saturated"] is True and c["limited_by"] == "machine" and c["streams_capacity"] is None, c
    assert c["cpu_share"] < 0.5
    assert "this machine was busy" in " ".join(out.split()) and "drives about" not in out


@pytest.mark.parametrize("server", [{"ttft": 0.05, "itl": 0.005}], indirect=True)
def test_a_burst_of_starts_is_seen_as_the_clients_wait_and_marks_ttft(server):
    """128 requests started at once: the last ones wait in the client before their headers go out. Each
    request's send stamp falls before the server's own arrival time for it, the wait is tens of ms at the
    tail (not zero), and the TTFT tail it inflates is marked as within reach of the client's delay."""
    from effmon.serving.clientwatch import ClientWatch

    cfg = LoadConfig(url=server, concurrency=128, requests=128, output_tokens=8)
    watch = ClientWatch()
    results, wall = asyncio.run(run_load(cfg, watch=watch))
    served = json.loads(urllib.request.urlopen(server + "/stats").read())
    sent = [r.t_start + r.send_delay_s for r in results]
    assert all(s <= served[r.response_id]["received"] + 0.002 for s, r in zip(sent, results, strict=True))
    waits = [r.send_delay_s for r in results]
    assert percentile(waits, 99) > 0.005 and min(waits) < percentile(waits, 99) / 2  # a burst: early ones go at once
    s = summarize(results, wall, cfg, watch.report(sum(r.chunks for r in results), 128)).to_json()
    assert s["client"]["send_delay_p99_s"] == percentile(waits, 99)
    assert "p99" in s["client"]["affected"]["ttft_s"]


@pytest.mark.parametrize("server", [{"ttft": 0.05, "itl": 0.01}], indirect=True)
def test_a_load_says_how_far_it_has_gone_and_how_long_it_has_left(server, tmp_path):
    """Requests done / total, elapsed and time left while the load runs (every 10 s; here every 0.3 s), and the
    time left checked against the time the load really took from that line to its end."""
    env = {**os.environ, "EFFMON_PROGRESS_EVERY_S": "0.3", "EFFMON_HOME": str(tmp_path / "h")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "effmon", "load", server, "--concurrency", "2", "--requests", "60", "--output-tokens",
         "8"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    said = []
    for line in proc.stderr:  # type: ignore[union-attr]
        if line.startswith("effmon load: request "):
            said.append((time.time(), line))
    assert proc.wait(60) == 0
    end = time.time()
    assert said and all("/60 (" in line for _, line in said), said
    lefts = []
    for when, line in said:
        done = int(line.split("request ")[1].split("/")[0])
        if 12 <= done <= 40 and " left" in line and "after a few" not in line:
            left = float(line.split("elapsed · ")[1].split(" s left")[0])
            lefts.append((left, end - when))
    assert len(lefts) >= 2, said
    assert all(abs(left - real) <= 0.3 * real + 0.3 for left, real in lefts), lefts
