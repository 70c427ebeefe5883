"""A derived metric from a plugin installed as a package (an ``effmon`` entry point), seen as a new engineer would
see it: ``effmon sources --metrics``, ``effmon report`` (table and JSON), ``effmon compare`` and ``effmon export``'s
Prometheus endpoint, each in its own process. The plugin is a real distribution on PYTHONPATH (a module and its
.dist-info with entry_points.txt), found by importlib.metadata as pip would leave it."""

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from tests.conftest import run_effmon

PLUGIN = '''
from effmon.plugins import NA, hookimpl


def tokens_per_watt(x):
    """Generated tokens per second per watt of average power."""
    it, aec = x["IT"], x["AEC"]
    return it / aec if it and aec else NA("needs IT and AEC")


@hookimpl
def effmon_register_metrics(register):
    register("tokens_per_watt", tokens_per_watt, label="tokens/s/W", unit="tokens/s/W", better="higher",
             needs=("IT", "AEC"), json=("efficiency", "tokens_per_s_per_w"), table="known", parent="energy_j",
             compare=True, export="effmon_tokens_per_second_per_watt")
'''


def install(site, module: str, code: str, entry_point: str) -> dict:
    """A distribution as pip leaves it: the module and its .dist-info with the entry point; the environment to
    run effmon with it."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(code)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[effmon]\n{entry_point} = {module}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def installed(tmp_path):
    return install(tmp_path / "site", "tpw_plugin", PLUGIN, "tpw")


def effmon(env, *args, home):
    return run_effmon(*args, env_home=home, env=env)


def test_an_installed_plugins_metric_is_in_every_command(installed, phases_session, tmp_path):
    home = tmp_path / "home"
    listed = effmon(installed, "sources", "--metrics", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    derived = {d["key"]: d for d in json.loads(listed.stdout)["derived"]}
    assert derived["tokens_per_watt"]["declared_by"] == "plugin tpw"
    assert derived["tokens_per_watt"]["needs"] == ["IT", "AEC"]

    report = effmon(installed, "report", str(phases_session), "--format", "json", home=home)
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    expected = doc["IT"] / doc["AEC"]["watts"]  # the plugin's arithmetic on the report's own IT and AEC
    assert doc["efficiency"]["tokens_per_s_per_w"] == pytest.approx(expected)

    table = effmon(installed, "report", str(phases_session), home=home)
    assert re.search(r"│\s+tokens/s/W\s+│\s+" + re.escape(f"{expected:.4g}") + r"\s+│", table.stdout), table.stdout

    compared = effmon(installed, "compare", str(phases_session), str(phases_session), "--format", "json", home=home)
    assert compared.returncode == 0, compared.stderr
    assert "tokens_per_watt" in [m["key"] for m in json.loads(compared.stdout)["metrics"]]

    proc = subprocess.Popen(
        [sys.executable, "-m", "effmon", "export", str(phases_session), "--prometheus", "0"],
        env={**installed, "EFFMON_HOME": str(home)},
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline, url = time.time() + 60, None
        while url is None and time.time() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None
            if m := re.search(r"(http://\S+/metrics)", line):
                url = m.group(1)
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
    [line] = [x for x in text.splitlines() if x.startswith("effmon_tokens_per_second_per_watt{")]
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(expected)


def test_without_the_plugin_nothing_of_it_shows(phases_session, tmp_path):
    listed = run_effmon("sources", "--metrics", "--json", env_home=tmp_path / "home")
    assert "tokens_per_watt" not in {d["key"] for d in json.loads(listed.stdout)["derived"]}


def test_a_broken_installed_plugin_is_said_and_reports_still_run(tmp_path, phases_session):
    code = textwrap.dedent(
        """
        from effmon.plugins import hookimpl

        @hookimpl
        def effmon_register_metrics(register):
            register("bad", lambda x: 1, label="bad", unit="", better=None, needs=("gpus",), compare=True)
        """
    )
    env = install(tmp_path / "site", "bad_plugin", code, "bad")
    listed = run_effmon("sources", env_home=tmp_path / "home", env=env)
    assert listed.returncode == 0
    assert "effmon: plugin 'bad': its metrics were not added" in listed.stderr  # piped: rows out, problems apart
    assert "does not say which way is better" in listed.stderr
    report = run_effmon("report", str(phases_session), "--format", "json", env_home=tmp_path / "home", env=env)
    assert report.returncode == 0 and "bad" not in json.loads(report.stdout).get("efficiency", {})
