"""The Prometheus exporter (issue 17): a session on a real /metrics endpoint on 127.0.0.1, scraped over HTTP and
parsed with prometheus_client's own parser, set against the recorded H100 trace it came from and against a
streaming server's own count of what it served."""

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PHASES_TRACE, run_effmon


def scrape(url: str) -> dict[str, list]:
    """Every sample on the endpoint, by metric family name."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {fam.name: fam.samples for fam in text_string_to_metric_families(text)}


def value(families: dict[str, list], name: str, sample: str | None = None, **labels: str) -> float:
    hits = [
        s.value
        for s in families[name]
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(hits) == 1, (name, labels, families[name])
    return hits[0]


class Served:
    """``effmon ARGS`` in the background until it prints the endpoint's URL."""

    def __init__(self, home: Path, *args: str):
        env = {**os.environ, "EFFMON_HOME": str(home), "COLUMNS": "120"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "effmon", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: list[str] = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            self.lines.append(line)
            if m := re.search(r"(http://\S+/metrics)", line):
                self.url = m.group(1)
                return
            assert line or self.proc.poll() is None, "".join(self.lines)
        raise AssertionError("no endpoint announced: " + "".join(self.lines))

    def stop(self) -> int:
        self.proc.terminate()
        self.proc.wait(30)
        return self.proc.returncode


def trace_rows(kind: str) -> list[dict]:
    return [d for d in map(json.loads, PHASES_TRACE.read_text().splitlines()) if d["kind"] == kind]


def test_export_serves_a_recorded_session_under_dcgm_names_as_the_trace_has_them(phases_session, tmp_path):
    """The bundled H100 trace replayed into a session, then exported: the GPU gauges carry dcgm-exporter's names,
    units and labels with the trace's last readings, the energy counter its last counter value in mJ, and the
    training and generation totals the trace's own rows add up to."""
    served = Served(tmp_path / "h", "export", str(phases_session), "--prometheus", "0")
    try:
        assert served.url.startswith("http://127.0.0.1:")  # bound to 127.0.0.1 unless told
        fams = scrape(served.url)
    finally:
        assert served.stop() == 0
    gpu = trace_rows("gpu")
    meta = trace_rows("meta")[0]
    last = gpu[-1]
    labels = {"gpu": "0", "device": "nvidia0", "modelName": meta["gpu_name"], "Hostname": socket.gethostname()}
    assert value(fams, "DCGM_FI_DEV_POWER_USAGE", **labels) == pytest.approx(last["power_w"])
    assert value(fams, "DCGM_FI_DEV_FB_USED", **labels) == pytest.approx(last["mem_used_bytes"] / 2**20)
    assert value(fams, "DCGM_FI_DEV_FB_FREE", **labels) == pytest.approx(
        (last["mem_total_bytes"] - last["mem_used_bytes"]) / 2**20
    )
    assert value(fams, "DCGM_FI_DEV_SM_CLOCK", **labels) == last["sm_clock_mhz"]
    assert value(fams, "DCGM_FI_DEV_GPU_TEMP", **labels) == last["temp_c"]
    sm = [r["sm_active_pct"] for r in gpu if r.get("sm_active_pct") is not None]
    assert value(fams, "DCGM_FI_PROF_SM_ACTIVE", **labels) == pytest.approx(sm[-1] / 100)
    # a counter named as dcgm-exporter names it (no _total), in mJ: the trace's last energy counter reading
    energy = [r["energy_j"] for r in gpu if r.get("energy_j") is not None]
    assert value(fams, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", **labels) == pytest.approx(energy[-1] * 1000)
    steps = trace_rows("train_step")
    assert value(fams, "effmon_training_steps", "effmon_training_steps_total") == len(steps)
    assert value(fams, "effmon_training_tokens", "effmon_training_tokens_total") == sum(s["tokens"] for s in steps)
    count = value(fams, "effmon_training_step_seconds", "effmon_training_step_seconds_count")
    total = value(fams, "effmon_training_step_seconds", "effmon_training_step_seconds_sum")
    assert count == len(steps) and total == pytest.approx(sum(s["t_end"] - s["t_start"] for s in steps))
    # tokens/s as the registry defines it, by the trace's own rows: tokens over the summed step time
    rate = sum(s["tokens"] for s in steps) / sum(s["t_end"] - s["t_start"] for s in steps)
    assert value(fams, "effmon_training_tokens_per_second") == pytest.approx(rate)
    # the session's energy against the hardware counter's own difference (within 1%)
    assert value(fams, "effmon_energy_joules") == pytest.approx(energy[-1] - energy[0], rel=0.01)
    # AEC by the trace's own arithmetic: the energy counter's increase over the session's span
    span = gpu[-1]["t"] - gpu[0]["t"]
    assert value(fams, "effmon_aec_watts") == pytest.approx((energy[-1] - energy[0]) / span, rel=0.01)
    batches = trace_rows("generate_batch")
    done = value(fams, "effmon_serving_requests", "effmon_serving_requests_total", outcome="succeeded")
    assert done == sum(b["requests"] for b in batches)
    assert value(fams, "effmon_serving_output_tokens", "effmon_serving_output_tokens_total") == sum(
        b["requests"] * b["new_tokens_each"] for b in batches
    )
    assert value(fams, "effmon_session_info", session=phases_session.stem) == 1


def test_the_endpoint_and_the_report_give_one_figure_per_metric(phases_session, tmp_path):
    """One session, one tokens/s, one J/token, one TTFT p50: every metric declared with an export name is on the
    endpoint with the value ``effmon report --format json`` gives for the whole session (the report computes it
    with the exact aggregation, the exporter with the running one), and the EfficientLLM figures AMU, PCU and AEC
    are there too."""
    from effmon.metrics import METRICS

    served = Served(tmp_path / "h", "export", str(phases_session), "--prometheus", "0")
    try:
        fams = scrape(served.url)
    finally:
        assert served.stop() == 0
    out = run_effmon("report", str(phases_session), "--format", "json", env_home=tmp_path / "h")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    checked = 0
    for m in METRICS.values():
        if m.export is None or m.json is None:
            continue
        expected = doc[m.json[0]] if len(m.json) == 1 else (doc.get(m.json[0]) or {}).get(m.json[1])
        if isinstance(expected, dict):
            expected = expected.get("value")
        if expected is None:
            assert not [s for s in fams.get(m.export, []) if s.name == m.export], m.export  # no value: no sample
            continue
        assert value(fams, m.export) == pytest.approx(expected, rel=1e-9), m.key
        checked += 1
    assert {"effmon_amu_bytes", "effmon_pcu_ratio", "effmon_aec_watts"} <= set(fams)
    assert checked >= 15


def test_record_prometheus_serves_while_recording_and_stops_with_it(tmp_path):
    """``record --replay ... --prometheus 0``: the endpoint answers while the session grows (the energy counter
    rises between two scrapes) and is gone when the recording ends; the session notes where it was."""
    served = Served(tmp_path / "h", "record", "-q", "--replay", str(PHASES_TRACE), "--speed", "20",
                    "--prometheus", "127.0.0.1:0")  # fmt: skip
    try:
        deadline = time.time() + 30
        while not (first := scrape(served.url)).get("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"):
            assert time.time() < deadline, "no GPU reading reached the endpoint"
            time.sleep(0.2)  # the endpoint is up before the first readings are written
        time.sleep(1.5)
        second = scrape(served.url)
        e1 = value(first, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", gpu="0")
        e2 = value(second, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", gpu="0")
        assert e2 > e1
        assert served.proc.wait(60) == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(served.url, timeout=2)
    finally:
        served.proc.kill()
    out = run_effmon("sessions", "show", "last", env_home=tmp_path / "h")
    assert "Prometheus metrics served at http://127.0.0.1:" in " ".join(out.stdout.split())


@pytest.mark.parametrize(
    "addr, words", [("70000", "0-65535"), ("host:port", "give PORT or HOST:PORT"), ("", "give PORT or HOST:PORT")]
)
def test_a_bad_prometheus_address_is_a_usage_error_before_anything_starts(tmp_path, addr, words):
    res = run_effmon("record", "--prometheus", addr, "--", sys.executable, "-c", "pass", env_home=tmp_path / "h")
    assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "h" / "sessions").exists() or not list((tmp_path / "h" / "sessions").glob("*.effmon"))


def test_a_taken_port_is_said_with_the_fix_and_the_recording_goes_on(phases_session, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run_effmon("export", str(phases_session), "--prometheus", str(port), env_home=tmp_path / "h")
        assert res.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in res.stderr
        assert "--prometheus 127.0.0.1:PORT" in res.stderr and "Traceback" not in res.stderr
        rec = run_effmon("record", "-q", "--prometheus", str(port), "--", sys.executable, "-c", "pass",
                         env_home=tmp_path / "h")  # fmt: skip
    assert rec.returncode == 0 and "recording goes on without the exporter" in rec.stderr


@pytest.mark.parametrize("server", [{"ttft": 0.02, "itl": 0.002}], indirect=True)
def test_serving_totals_match_what_the_server_served(server, tmp_path):
    """A load against the injected-timing server, exported: requests and generated tokens are the server's own
    count of what it sent, and the TTFT histogram holds every request."""
    res = run_effmon("load", server, "--model", "m", "--requests", "24", "--concurrency", "4", "--output-tokens", "16",
                     env_home=tmp_path / "h")  # fmt: skip
    assert res.returncode == 0, res.stderr
    truth = json.loads(urllib.request.urlopen(server + "/stats").read())
    served = Served(tmp_path / "h", "export", "last", "--prometheus", "0", "--duration", "30")
    try:
        fams = scrape(served.url)
    finally:
        served.stop()
    done = [x for x in truth.values() if "last_content" in x]
    assert value(fams, "effmon_serving_requests", "effmon_serving_requests_total", outcome="succeeded") == len(done)
    assert value(fams, "effmon_serving_output_tokens", "effmon_serving_output_tokens_total") == sum(
        int(x["tokens"]) for x in done
    )
    assert value(fams, "effmon_serving_ttft_seconds", "effmon_serving_ttft_seconds_count") == len(done)


# -- dcgm-exporter as a source ----------------------------------------------------------------------------------
DCGM_TEXT = Path(__file__).parents[1] / "data" / "dcgm_exporter_h100.txt"


class _Text(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def text_server(body: bytes):
    handler = type("Handler", (_Text,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def dcgm_fields(text: str) -> dict[tuple[str, str], float]:
    """(field, gpu) -> value, straight from the exposition text (by prometheus_client's parser)."""
    return {
        (s.name.removesuffix("_total"), s.labels["gpu"]): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_attach_dcgm_reads_a_nodes_dcgm_exporter_as_its_gpus(tmp_path):
    """dcgm-exporter's exposition (its field names, units and labels, two H100s) served on 127.0.0.1: the session
    holds each GPU's readings in effmon's units, its name and UUID, and nothing of this machine."""
    from effmon.core.store import SessionReader

    text = DCGM_TEXT.read_text()
    truth = dcgm_fields(text)
    server = text_server(text.encode())
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        res = run_effmon("attach", "--dcgm", url, "--headless", "--duration", "2.5", env_home=tmp_path / "h")
    finally:
        server.shutdown()
    assert res.returncode == 0, res.stderr
    with SessionReader(next((tmp_path / "h" / "sessions").glob("*.effmon"))) as r:
        meta = r.meta()
        gpus = {g["index"]: g for g in meta["gpus"]}
        rows = {row["gpu"]: row for row in r.rows_between("gpu", 0, 1e12)}
        gpm = {row["gpu"]: row for row in r.rows_between("gpu_gpm", 0, 1e12)}
        energy = {row["gpu"]: row for row in r.rows_between("gpu_energy", 0, 1e12)}
        assert not r.has("host") or r.count("host") == 0  # another node: nothing of this machine is mixed in
    for g in ("0", "1"):
        i = int(g)
        assert gpus[i]["name"] == "NVIDIA H100 80GB HBM3" and gpus[i]["uuid"].startswith("GPU-")
        assert rows[i]["power_w"] == pytest.approx(truth[("DCGM_FI_DEV_POWER_USAGE", g)])
        assert rows[i]["mem_used_bytes"] == truth[("DCGM_FI_DEV_FB_USED", g)] * 2**20
        free = truth[("DCGM_FI_DEV_FB_FREE", g)]
        assert rows[i]["mem_total_bytes"] == (truth[("DCGM_FI_DEV_FB_USED", g)] + free) * 2**20
        assert rows[i]["sm_clock_mhz"] == truth[("DCGM_FI_DEV_SM_CLOCK", g)]
        assert rows[i]["util_gpu_pct"] == truth[("DCGM_FI_DEV_GPU_UTIL", g)]
        assert gpm[i]["sm_active_pct"] == pytest.approx(truth[("DCGM_FI_PROF_SM_ACTIVE", g)] * 100)
        assert gpm[i]["tensor_active_pct"] == pytest.approx(truth[("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", g)] * 100)
        assert energy[i]["energy_counter_j"] == pytest.approx(truth[("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", g)] / 1e3)


def test_attach_dcgm_to_something_else_fails_clearly(tmp_path):
    server = text_server(b"# HELP up x\n# TYPE up gauge\nup 1\n")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        res = run_effmon("attach", "--dcgm", url, "--headless", "--duration", "1", env_home=tmp_path / "h")
    finally:
        server.shutdown()
    assert res.returncode == 2 and "serves no DCGM_FI_* fields" in res.stderr and "Traceback" not in res.stderr


def test_effmons_exporter_reads_back_through_the_dcgm_source(phases_session, tmp_path):
    """effmon's exporter is dcgm-exporter-shaped enough for a dcgm reader: attach --dcgm to it records the
    trace's last readings."""
    from effmon.core.store import SessionReader

    served = Served(tmp_path / "h1", "export", str(phases_session), "--prometheus", "0")
    try:
        res = run_effmon("attach", "--dcgm", served.url, "--headless", "--duration", "2", env_home=tmp_path / "h2")
    finally:
        served.stop()
    assert res.returncode == 0, res.stderr
    last = trace_rows("gpu")[-1]
    with SessionReader(next((tmp_path / "h2" / "sessions").glob("*.effmon"))) as r:
        row = r.rows_between("gpu", 0, 1e12)[-1]
    assert row["power_w"] == pytest.approx(last["power_w"])
    assert row["mem_used_bytes"] == last["mem_used_bytes"]
    assert row["mem_total_bytes"] == last["mem_total_bytes"]


def test_report_from_prometheus_says_what_is_wrong(tmp_path):
    for args, words in (
        (["--prometheus", "http://127.0.0.1:1"], "needs --range"),
        (["--prometheus", "http://127.0.0.1:1", "--range", "now-5m"], "give START:END"),
        (["--prometheus", "http://127.0.0.1:1", "--range", "now:now-5m"], "must come after"),
        (["--prometheus", "http://127.0.0.1:1", "--range", "now-5m:now"], "cannot reach"),
        (["--prometheus", "http://127.0.0.1:1", "--range", "now-5m:now", "--match", "job=x"], "in braces"),
        ([], "give a session"),
    ):
        res = run_effmon("report", *args, env_home=tmp_path / "h")
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
