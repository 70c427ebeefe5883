"""Beyond one machine (issue 17): a real Prometheus (Debian's package; .ci/run installs it) scrapes two effmon
exporters fed by replayed H100 sessions, two "hosts". ``effmon report --prometheus`` and the fleet view
(``effmon top --prometheus``, driven by Pilot) must give each host's AEC, AMU and PCU as that host's own session
gives them over the same stretch, within 1 %."""

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import PHASES_TRACE, free_port, run_effmon
from tests.e2e.test_exporter import Served

PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (.ci/run installs Debian's prometheus)"
)


def short_trace(path: Path) -> Path:
    """20 s of the bundled trace's LoRA fine-tune (power swinging between about 130 and 700 W with its steps)."""
    lines = PHASES_TRACE.read_text().splitlines()
    gpu = [line for line in lines if json.loads(line)["kind"] == "gpu"][420:620]
    path.write_text("\n".join([lines[0], *gpu]) + "\n")
    return path


def session_start(home: Path) -> float:
    from effmon.core.store import SessionReader

    with SessionReader(next((home / "sessions").glob("*.effmon"))) as r:
        return float(r.time_range()[0])


def when_prometheus_saw(api: str, instance: str, session_t: float) -> float:
    """The time stamp of the first scrape at which the session's clock had reached ``session_t`` (the exporter's
    effmon_session_time_seconds: a replay runs on the trace's clock, not the wall's). The raw samples of a range
    vector, so it is the scrape's own time, not a point of an evaluation grid."""
    query = urllib.parse.urlencode({"query": f'effmon_session_time_seconds{{instance="{instance}"}}[5m]'})
    doc = json.loads(urllib.request.urlopen(f"{api}/api/v1/query?{query}").read())
    (series,) = doc["data"]["result"]
    return next(float(t) for t, v in series["values"] if float(v) >= session_t)


def wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            assert time.time() < deadline, f"{url} never answered"
            time.sleep(0.1)


class Host:
    def __init__(self, port: int, home: Path):
        self.port, self.home, self.instance = port, home, f"127.0.0.1:{port}"

    def own(self) -> dict:
        """The host's own session, 2 s to 18 s into it (EfficientLLM export)."""
        res = run_effmon("report", "last", "--format", "efficientllm", "--window", "2:18", env_home=self.home)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def stretch(self, api: str) -> tuple[float, float]:
        """The same 2 s to 18 s, in the Prometheus server's time."""
        first = session_start(self.home)
        a, b = (when_prometheus_saw(api, self.instance, first + s) for s in (2, 18))
        return a, b


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    """A real Prometheus scraping two recordings every 100 ms while they replay 20 s of the trace; yields its URL
    and the two hosts once both recordings have ended."""
    tmp = tmp_path_factory.mktemp("prom")
    trace = short_trace(tmp / "short.jsonl")
    hosts = [Host(free_port(), tmp / f"h{i}") for i in range(2)]
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 100ms, scrape_timeout: 90ms}\n"
        "scrape_configs:\n  - job_name: train\n    static_configs:\n"
        f"      - targets: [{', '.join(repr(h.instance) for h in hosts)}]\n"
    )
    pport = free_port()
    server = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{pport}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    api = f"http://127.0.0.1:{pport}"
    try:
        wait_for(f"{api}/-/ready")
        deadline = time.time() + 30  # Prometheus hands new targets to its scrapers after up to 5 s
        while len(json.loads(urllib.request.urlopen(f"{api}/api/v1/targets").read())["data"]["activeTargets"]) < 2:
            assert time.time() < deadline, "Prometheus never took its targets"
            time.sleep(0.2)
        recs = [Served(h.home, "record", "-q", "--replay", str(trace), "--prometheus", str(h.port)) for h in hosts]
        for rec in recs:
            assert rec.proc.wait(120) == 0
        time.sleep(0.5)
        yield api, hosts
    finally:
        server.terminate()
        server.wait(20)


@needs_prometheus
def test_report_from_a_real_prometheus_agrees_with_each_hosts_own_session(prom, tmp_path):
    """effmon report --prometheus, one host at a time, gives the AEC, AMU and PCU of that host's own session over
    the same stretch within 1%."""
    api, hosts = prom
    for host in hosts:
        own = host.own()
        a, b = host.stretch(api)
        res = run_effmon("report", "--prometheus", api, "--match", f'{{job="train",instance="{host.instance}"}}',
                         "--range", f"{a}:{b}", "--format", "efficientllm",
                         env_home=tmp_path / "reader")  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert "1 GPUs on 1 hosts" in res.stderr
        fromprom = json.loads(res.stdout)
        for metric in ("AEC", "AMU", "PCU"):
            assert fromprom[metric] == pytest.approx(own[metric], rel=0.01), (metric, host.instance)


def cells(app) -> dict[str, list[str]]:
    """The host table as drawn: each row's cells by the row's host."""
    from textual.widgets import DataTable

    table = app.query_one("#hosts", DataTable)
    rows = {}
    for key in table.rows:
        row = [str(getattr(c, "plain", c)) for c in table.get_row(key)]
        rows[row[0]] = row
    return rows


def drawn(app, selector: str) -> str:
    from textual.geometry import Region

    w = app.screen.query_one(selector)
    return "\n".join(strip.text for strip in w.render_lines(Region(0, 0, w.region.width, w.region.height)))


@needs_prometheus
def test_fleet_view_agrees_with_each_hosts_own_session_and_opens_a_host(prom):
    """The fleet view over each host's stretch: the host's row shows its own session's AEC, AMU and PCU within
    1%; the job's strip is the sum (AEC, AMU) and mean (PCU) of the rows; Enter opens the host as the
    dashboard's GPU cards, Escape comes back."""
    from effmon.tui.fleet import FleetApp

    api, hosts = prom
    for host in hosts:
        own = host.own()
        a, b = host.stretch(api)

        async def go(host=host, own=own, a=a, b=b):
            app = FleetApp(api, '{job="train"}', fixed=(a, b))
            async with app.run_test(size=(120, 30)) as pilot:
                for _ in range(100):
                    await pilot.pause(0.05)
                    if app.fleet is not None:
                        break
                fleet = app.fleet
                assert fleet is not None and app.error is None, app.error
                assert [h.name for h in fleet.hosts] == sorted(h.instance for h in hosts)
                mine = next(h for h in fleet.hosts if h.name == host.instance)
                for metric in ("AEC", "AMU", "PCU"):
                    assert mine.results[metric].value == pytest.approx(own[metric], rel=0.01), metric
                row = cells(app)[host.instance]
                assert row[3] == f"{mine.results['AEC'].value:.0f}" and row[5] == f"{mine.results['PCU'].value:.3f}"
                job = fleet.results
                assert job["AEC"].value == pytest.approx(sum(h.results["AEC"].value for h in fleet.hosts))
                assert job["AMU"].value == pytest.approx(sum(h.results["AMU"].value for h in fleet.hosts))
                assert job["PCU"].value == pytest.approx(sum(h.results["PCU"].value for h in fleet.hosts) / 2)
                strip = drawn(app, "#fleet-strip")
                assert "2 GPUs on 2 hosts" in strip and f"AEC {job['AEC'].value:.0f} W" in strip
                app.query_one("#hosts").move_cursor(row=[h.name for h in fleet.hosts].index(host.instance))
                await pilot.press("enter")
                await pilot.pause(0.3)
                assert type(app.screen).__name__ == "HostScreen"
                card = app.screen.query_one("#gpu-0")
                assert "H100" in card.border_title
                assert "SM active" in drawn(app, "#gpu-0-text")
                assert f"AEC {mine.results['AEC'].value:.0f} W" in drawn(app, "#efficiency")
                await pilot.press("escape")
                await pilot.pause(0.1)
                assert type(app.screen).__name__ != "HostScreen"

        asyncio.run(go())


@needs_prometheus
def test_fleet_view_says_when_nothing_matches(prom, tmp_path):
    api, _ = prom
    res = run_effmon("top", "--prometheus", api, "--match", '{job="nothing"}', env_home=tmp_path / "h")
    assert res.returncode == 2 and "has no dcgm-exporter series" in res.stderr and "--match" in res.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["--prometheus", "http://127.0.0.1:1"], "cannot reach"),
        (["--prometheus", "http://127.0.0.1:1", "--match", "job=x"], "in braces"),
        (["--prometheus", "http://127.0.0.1:1", "--range", "now:now-5m"], "must come after"),
        (["--match", '{job="x"}'], "--prometheus http://HOST:9090"),
        (["--window", "soon"], "is not a duration"),
    ],
)
def test_fleet_view_errors_say_what_to_do(tmp_path, args, words):
    res = run_effmon("top", *args, env_home=tmp_path / "h")
    assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_server_that_stops_answering_is_said_and_the_view_keeps_its_figures():
    """The view's server goes away (here: nothing listens at its address): the header says so, with the retry, and
    the hosts and their figures stay on screen."""
    from effmon.tui.fleet import FleetApp
    from tests.fleet_data import trace_fleet

    fleet = trace_fleet()

    async def go():
        app = FleetApp(f"http://127.0.0.1:{free_port()}", window_s=300, refresh_s=0.2, first=fleet)
        async with app.run_test(size=(160, 30)) as pilot:
            for _ in range(100):
                await pilot.pause(0.05)
                if app.error:
                    break
            assert app.error and "cannot reach" in app.error
            header = drawn(app, "#header")
            assert "Prometheus: cannot reach" in header and "retrying every 0.2 s" in header
            assert sorted(cells(app)) == ["node01", "node02", "node03"] and app.fleet is fleet

    asyncio.run(go())
