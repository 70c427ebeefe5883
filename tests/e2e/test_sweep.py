"""effmon sweep (issue 18): a grid of loads recorded as one session, each cell's figures checked against the raw
rows of the session's SQLite file (energy from the energy counter's reads, tokens from the server's usage), against
a server with injected timing, and against effmon serve tiny-cpu. The GPU is the stand-in driver replaying the
real H100 trace (tests/effmon_on_trace.py), so the energy is real H100 readings, not the load's."""

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import psutil
import pytest

from tests.conftest import REPO, run_effmon

ON_TRACE = [sys.executable, "-m", "tests.effmon_on_trace"]


def sweep(home, *args, timeout=300):
    env = {**os.environ, "EFFMON_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    res = subprocess.run([*ON_TRACE, "sweep", *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=timeout)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def raw(session):
    """The session's rows as its SQLite file holds them (one table per entity, s_NAME)."""
    db = sqlite3.connect(session)
    db.row_factory = sqlite3.Row

    def rows(sql):
        return [dict(r) for r in db.execute(sql)]

    out = {
        "energy": rows("SELECT t, energy_counter_j FROM s_gpu_energy WHERE energy_counter_j IS NOT NULL ORDER BY t"),
        "power": rows("SELECT t, power_w FROM s_gpu WHERE power_w IS NOT NULL ORDER BY t"),
        "requests": rows("SELECT * FROM s_request"),
        "phases": rows("SELECT * FROM s_phase"),
    }
    db.close()
    return out


def counter_delta(energy, a, b):
    t = np.array([r["t"] for r in energy])
    x = np.array([r["energy_counter_j"] for r in energy])
    return float(np.interp(b, t, x) - np.interp(a, t, x))


def mean_power(power, a, b):
    t = np.array([r["t"] for r in power])
    p = np.array([r["power_w"] for r in power])
    grid = np.linspace(a, b, 2001)
    return float(np.trapezoid(np.interp(grid, t, p), grid) / (b - a))


@pytest.mark.parametrize("server", [{"ttft": 0.05, "itl": 0.004}], indirect=True)
def test_cells_against_the_raw_rows_and_the_servers_timing(server, tmp_path):
    """Against a server with injected timing (TTFT 50 ms, a token every 4 ms, usage sent): a 2 x 2 x 2 grid.
    Each cell's J/token is the energy counter's increase over the cell's phase (interpolated between its raw
    reads) over the output tokens of the cell's request rows; J/request, static/dynamic energy and tokens/s
    follow by arithmetic; the idle power is the raw power readings' mean over the idle phase; TTFT and E2E are
    the server's injected timing."""
    home, out = tmp_path / "h", tmp_path / "cells.json"
    sweep(home, server, "--model", "m", "--input", "8,32", "--output", "8,24", "--concurrency", "1,2",
          "--requests", "4", "--max-rounds", "2", "--idle", "1", "-o", str(out))  # fmt: skip
    doc = json.loads(out.read_text())
    assert [c["name"] for c in doc["cells"]] == [
        f"in{i}-out{o}-c{c}" for i in (8, 32) for o in (8, 24) for c in (1, 2)
    ]  # fmt: skip
    session = next((home / "sessions").glob("*.effmon"))
    rows = raw(session)
    phases = {p["name"]: p for p in rows["phases"]}
    idle = phases["idle"]
    idle_w = mean_power(rows["power"], idle["t_start"], idle["t_end"])
    assert doc["idle_power_w"] == pytest.approx(idle_w, rel=0.02)
    for cell in doc["cells"]:
        p = phases[cell["name"]]
        mine = [r for r in rows["requests"] if r["phase"] == cell["name"]]
        assert len(mine) == cell["requests"] and all(r["error"] is None and r["tokens_from"] == "usage" for r in mine)
        tokens = sum(r["generated_tokens"] for r in mine)
        assert tokens == cell["output_tokens"] * len(mine)  # the server generated max_tokens each time
        energy = counter_delta(rows["energy"], p["t_start"], p["t_end"])
        assert cell["energy_source"] == "nvml_energy_counter"
        assert cell["energy_j"] == pytest.approx(energy, rel=1e-6)
        assert cell["J_per_output_token"] == pytest.approx(energy / tokens, rel=1e-6)
        assert cell["J_per_request"] == pytest.approx(energy / len(mine), rel=1e-6)
        duration = p["t_end"] - p["t_start"]
        assert cell["duration_s"] == pytest.approx(duration)
        assert cell["static_j"] == pytest.approx(doc["idle_power_w"] * duration)
        assert cell["dynamic_j"] == pytest.approx(energy - doc["idle_power_w"] * duration, rel=1e-6, abs=1e-6)
        assert cell["tokens_per_s"] == pytest.approx(tokens / duration)
        assert cell["ttft_p50_s"] == pytest.approx(0.05, abs=0.03)
        e2e = 0.05 + (cell["output_tokens"] - 1) * 0.004
        assert cell["e2e_p50_s"] == pytest.approx(e2e, abs=0.03 + 0.002 * cell["output_tokens"])
        assert 1 <= cell["rounds"] <= 2 and cell["sm_clock_mhz"] > 0
    # the report has the sweep's section, its table and its charts
    html = tmp_path / "r.html"
    res = run_effmon("report", "last", "--format", "html", "-o", str(html), env_home=home)
    assert res.returncode == 0, res.stderr
    text = html.read_text()
    section = text[text.index("<h2 id='sweep'>") :]
    assert "in32-out24-c2" in section and "J per output token over input x output length" in section
    assert "Pareto front" in section and section.count("<img") == 2


def test_a_preset_sweep_serves_and_stops_the_tiny_model(tmp_path):
    """effmon sweep tiny-cpu: the preset's server starts, every cell runs against it, the server stops with the
    sweep; the cells' tokens are the server's usage and every request succeeded."""
    home, out = tmp_path / "h", tmp_path / "cells.csv"
    res = sweep(home, "tiny-cpu", "--input", "16", "--output", "8,16", "--requests", "3", "--max-rounds", "1",
                "--idle", "1", "-o", str(out))  # fmt: skip
    assert "effmon sweep: [2/2] in16-out16-c1" in res.stderr and "session" in res.stderr
    lines = out.read_text().splitlines()
    head = lines[0].split(",")
    cells = [dict(zip(head, line.split(","), strict=True)) for line in lines[1:]]
    assert [c["name"] for c in cells] == ["in16-out8-c1", "in16-out16-c1"]
    rows = raw(next((home / "sessions").glob("*.effmon")))
    for c in cells:
        mine = [r for r in rows["requests"] if r["phase"] == c["name"]]
        assert len(mine) == 3 == int(c["requests"]) and all(r["error"] is None for r in mine)
        assert int(c["output_tokens_served"]) == sum(r["generated_tokens"] for r in mine)
        assert float(c["J_per_output_token"]) == pytest.approx(float(c["energy_j"]) / int(c["output_tokens_served"]))
    from effmon.core.store import SessionReader

    with SessionReader(next((home / "sessions").glob("*.effmon"))) as r:
        launched = r.meta()["launched"]["pid"]
    assert not psutil.pid_exists(launched) or psutil.Process(launched).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("server", [{"ttft": 0.02, "itl": 0.002}], indirect=True)
def test_tasks_take_the_place_of_the_input_length_and_no_gpu_is_said(server, tmp_path):
    """Shipped task prompt sets as the grid's first axis; on this machine's own (absent) GPU the energy figures
    are N/A, never zero, and the sweep still runs."""
    out = tmp_path / "cells.json"
    res = run_effmon("sweep", server, "--model", "m", "--tasks", "qa,summarisation", "--output", "8", "--requests",
                     "2", "--max-rounds", "1", "--idle", "1", "-o", str(out), env_home=tmp_path / "h")  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    assert [(c["name"], c["task"]) for c in doc["cells"]] == [
        ("qa-out8-c1", "qa"),
        ("summarisation-out8-c1", "summarisation"),
    ]
    for c in doc["cells"]:
        assert c["requests"] == 2 and c["output_tokens_served"] == 16
        assert c["energy_j"] is None and c["J_per_output_token"] is None


@pytest.mark.parametrize(
    "args, words",
    [
        (["tiny-cpu", "--input", "0"], "positive whole numbers"),
        (["tiny-cpu", "--output", "a,b"], "whole numbers"),
        (["tiny-cpu", "--tasks", "nosuch"], "not a shipped task"),
        (["tiny-cpu", "-o", "cells.txt"], "give a .csv or .json"),
        (["http://127.0.0.1:1", "--model", "m", "--idle", "1"], "cannot"),
        (["no-such-preset"], "no-such-preset"),
    ],
)
def test_bad_input_is_said_with_the_fix(tmp_path, args, words):
    res = run_effmon("sweep", *args, env_home=tmp_path / "h")
    assert res.returncode != 0 and words in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_pareto_spread_and_the_shipped_tasks():
    from effmon.report.sweep import pareto
    from effmon.serving.sweep import TASKS, load_task, spread_of

    points = [(0.1, 5.0, "a"), (0.2, 3.0, "b"), (0.15, 6.0, "c"), (0.3, 3.5, "d"), (0.4, 1.0, "e")]
    assert [p[2] for p in pareto(points)] == ["a", "b", "e"]
    assert spread_of([100.0, 110.0, 90.0]) == pytest.approx(0.2)
    assert spread_of([5.0]) is None
    for task in TASKS:
        prompts = load_task(task)
        assert len(prompts) >= 6 and all(len(p.split()) >= 8 for p in prompts)


@pytest.mark.parametrize("server", [{"fail-every": 1}], indirect=True)
def test_a_server_that_fails_every_request_stops_the_sweep_and_says_why(server, tmp_path):
    res = run_effmon("sweep", server, "--model", "m", "--output", "8,16", "--requests", "2", "--idle", "1",
                     env_home=tmp_path / "h")  # fmt: skip
    assert res.returncode == 1 and "every request of a round failed (http_500" in res.stderr, res.stderr
    assert "the sweep stops here" in res.stderr and "Traceback" not in res.stderr
    listed = run_effmon("sessions", "--json", env_home=tmp_path / "h")
    (session,) = json.loads(listed.stdout)
    assert session["status"] == "failed"


# -- GPU settings: only on request, checked first, put back on every exit path (stand-in driver only) ----------
@pytest.fixture
def nv(monkeypatch, tmp_path):
    """The stand-in NVML driver as this process's pynvml, and a fresh effmon home for the recovery record."""
    import time

    from tests import trace_nvml

    driver = trace_nvml.make(time.time, gpus=2)
    monkeypatch.setitem(sys.modules, "pynvml", driver)
    monkeypatch.setenv("EFFMON_HOME", str(tmp_path / "h"))
    (tmp_path / "h").mkdir(mode=0o700)
    return driver


def test_settings_are_recorded_before_they_change_and_put_back(nv):
    from effmon.core.gpuctl import GpuSettings, record_path

    with GpuSettings() as gpu:
        gpu.check([1410], [500])
        assert nv.settings == {"locked": {}, "limit_mw": {0: 700000, 1: 700000}}  # the check changed nothing
        gpu.lock_sm(1410)
        gpu.power_limit(500)
        record = json.loads(record_path().read_text())
        assert record["gpus"]["0"] == {"uuid": "GPU-00000000", "sm_locked": True, "power_limit_mw": 700000}
        assert oct(record_path().stat().st_mode & 0o777) == "0o600"
        assert nv.settings == {"locked": {0: 1410, 1: 1410}, "limit_mw": {0: 500000, 1: 500000}}
        assert nv.nvmlDeviceGetClockInfo(0, nv.NVML_CLOCK_SM) == 1410
    assert nv.settings == {"locked": {}, "limit_mw": {0: 700000, 1: 700000}}
    assert not record_path().exists()


def test_a_killed_sweep_leaves_a_record_that_clocks_reset_puts_back(nv, capsys):
    """SIGKILL cannot be caught: the record stays; a new sweep refuses to start; effmon clocks shows it and
    effmon clocks --reset puts the GPUs back."""
    from effmon.cli import main
    from effmon.core.gpuctl import ClockError, GpuSettings, record_path

    gpu = GpuSettings(nv=nv)
    gpu.__enter__()
    gpu.lock_sm(990)
    gpu.power_limit(350)  # ... and effmon is killed here: nothing restores
    with pytest.raises(ClockError, match="effmon clocks --reset"):
        GpuSettings(nv=nv).__enter__()
    assert main(["clocks"]) == 1
    assert "power_limit_mw" in capsys.readouterr().out
    assert main(["clocks", "--reset"]) == 0
    said = capsys.readouterr().out
    assert "GPU 0: SM clock unlocked" in said and "GPU 1: power limit back to 700 W" in said
    assert nv.settings == {"locked": {}, "limit_mw": {0: 700000, 1: 700000}} and not record_path().exists()
    assert main(["clocks"]) == 0 and "no GPU setting" in capsys.readouterr().out


def test_without_privileges_or_in_range_nothing_changes(tmp_path):
    env = {**os.environ, "EFFMON_HOME": str(tmp_path / "h"), "EFFMON_TEST_NVML_UNPRIVILEGED": "1"}
    for args, env_, words in (
        (["--sm-clocks", "1410"], env, "needs root"),
        (["--sm-clocks", "2500"], {**env, "EFFMON_TEST_NVML_UNPRIVILEGED": "0"}, "up to 1980 MHz"),
        (["--power-limits", "900"], {**env, "EFFMON_TEST_NVML_UNPRIVILEGED": "0"}, "takes 200 to 700 W"),
    ):
        res = subprocess.run([*ON_TRACE, "sweep", "http://127.0.0.1:1", "--model", "m", *args], cwd=REPO, env=env_,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert not (tmp_path / "h" / "sessions").exists() or not list((tmp_path / "h" / "sessions").glob("*"))


@pytest.mark.parametrize("server", [{"ttft": 0.02, "itl": 0.002}], indirect=True)
def test_locked_clocks_per_cell_and_put_back_when_the_sweep_is_stopped(server, tmp_path):
    """--sm-clocks 1410,990: each cell's SM clock, as the session read it, is the one locked for it; SIGTERM in
    the middle of the sweep puts the GPU back (the session says what was restored; no record is left)."""
    import signal
    import time

    home = tmp_path / "h"
    env = {**os.environ, "EFFMON_HOME": str(home)}
    out = tmp_path / "cells.json"
    sweep(home, server, "--model", "m", "--output", "8", "--requests", "12", "--max-rounds", "1", "--idle", "0.5",
          "--sm-clocks", "1410,990", "-o", str(out))  # fmt: skip
    cells = json.loads(out.read_text())["cells"]
    assert [(c["name"], c["sm_clock_locked"]) for c in cells] == [("in128-out8-c1-sm1410", 1410),
                                                                  ("in128-out8-c1-sm990", 990)]  # fmt: skip
    session = next((home / "sessions").glob("*.effmon"))
    db = sqlite3.connect(session)
    doc = json.loads(out.read_text())
    for c in cells:  # each cell's static power is the idle phase's at its own clock
        assert c["idle_power_w"] == doc["idle_power_by_setting_w"][f"idle-sm{c['sm_clock_locked']}"]
        assert c["static_j"] == pytest.approx(c["idle_power_w"] * c["duration_s"])
    for c in cells:  # every SM clock reading inside the cell is the locked clock
        inside = [v for (v,) in db.execute("SELECT sm_clock_mhz FROM s_gpu WHERE t > ? AND t < ?",
                                           (c["t_start"], c["t_end"]))]  # fmt: skip
        assert inside and set(inside) == {c["sm_clock_locked"]}, (c["name"], inside)
        # the cell's figure is a time average, its edges drawn toward the readings beside it
        assert c["sm_clock_mhz"] == pytest.approx(c["sm_clock_locked"], rel=0.1)
    db.close()
    from effmon.core.store import SessionReader

    with SessionReader(next((home / "sessions").glob("*.effmon"))) as r:
        assert r.meta()["gpu_settings"]["restored"] == ["GPU 0: SM clock unlocked"]
    assert not (home / "gpu-settings.json").exists()
    # stopped in the middle
    proc = subprocess.Popen([*ON_TRACE, "sweep", server, "--model", "m", "--output", "8,16,32,64", "--requests", "50",
                             "--idle", "1", "--sm-clocks", "1410", "--name", "stopped"], cwd=REPO, env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines = []
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "GPU setting now" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode != 0, "".join(lines) + rest
    with SessionReader(home / "sessions" / "stopped.effmon") as r:
        meta = r.meta()
    assert meta["gpu_settings"]["restored"] == ["GPU 0: SM clock unlocked"] and meta["status"] == "interrupted"
    assert not (home / "gpu-settings.json").exists()


def test_charts_of_a_clock_sweep_draw_a_panel_per_setting():
    """A DVFS grid (2 inputs x 2 outputs x 2 concurrencies x 2 SM clocks) and tasks: the heatmap has a panel per
    concurrency and clock, the Pareto front is drawn through the best cells, the task bars per setting."""
    import io

    from PIL import Image

    from effmon.report.sweep import charts

    cells = [
        {
            "name": f"in{i}-out{o}-c{c}-sm{sm}",
            "task": None,
            "input_tokens": i,
            "output_tokens": o,
            "concurrency": c,
            "sm_clock_locked": sm,
            "power_limit_w": None,
            "J_per_output_token": (i + o) / (c * sm),
            "e2e_p50_s": o * 1000 / sm,
        }  # fmt: skip
        for i in (64, 256)
        for o in (16, 64)
        for c in (1, 4)
        for sm in (1410, 990)
    ] + [
        {
            "name": f"{t}-out64-c1",
            "task": t,
            "input_tokens": None,
            "output_tokens": 64,
            "concurrency": 1,
            "sm_clock_locked": None,
            "power_limit_w": None,
            "J_per_output_token": j,
            "e2e_p50_s": 0.5,
        }  # fmt: skip
        for t, j in (("qa", 0.2), ("summarisation", 0.35))
    ]
    drawn = dict(charts({"cells": cells}))
    assert list(drawn) == [
        "J per output token over input x output length",
        "Energy per token against latency: the Pareto front",
        "J per output token by task",
    ]
    heat = Image.open(io.BytesIO(drawn["J per output token over input x output length"]))
    wide, tall = heat.size
    assert tall > wide / 2  # two rows of panels (one per clock), not one
