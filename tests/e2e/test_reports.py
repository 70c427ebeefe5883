"""Markdown/HTML reports with plots, and effmon compare, on sessions replayed from the real H100 trace."""

import base64
import html.parser
import itertools
import json
import re
import shutil
import subprocess

import pytest

pytest.importorskip("matplotlib")

from tests.conftest import PHASES_TRACE, run_effmon, trace_lines  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


class Collector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.h3 = set(), [], []
        self._in_h3 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a["src"])
        self._in_h3 = tag == "h3"

    def handle_data(self, data):
        if self._in_h3:
            self.h3.append(data)
            self._in_h3 = False


def test_html_report_is_self_contained_with_every_section(phases_session, tmp_path):
    out = tmp_path / "r.html"
    res = run_effmon("report", str(phases_session), "--format", "html", "-o", str(out))
    assert res.returncode == 0, res.stderr
    p = Collector()
    p.feed(out.read_text())
    assert {"what-ran", "metrics", "energy", "over-time", "notes"} <= p.ids
    assert len(p.imgs) >= 6
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    titles = " | ".join(p.h3)
    for word in ("memory", "SM and tensor activity", "power limit", "Clocks", "Step time", "Throughput"):
        assert word in titles
    text = out.read_text()
    assert "NVIDIA H100 80GB HBM3" in text and "580.159.04" in text and "nvml_gpm_sm_active" in text


def test_markdown_report_links_resolve(phases_session, tmp_path):
    out = tmp_path / "r.md"
    assert run_effmon("report", str(phases_session), "--format", "md", "-o", str(out)).returncode == 0
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", out.read_text())
    assert len(links) >= 6
    for link in links:
        assert (tmp_path / link).read_bytes().startswith(PNG)


def test_report_of_a_session_cut_by_a_crash_says_so(tmp_path):
    import sqlite3

    home = tmp_path / "h"
    assert (
        run_effmon(
            "record", "-q", "--name", "cut", "--replay", str(PHASES_TRACE), "--as-fast-as-possible", env_home=home
        ).returncode
        == 0
    )
    path = home / "sessions" / "cut.effmon"
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'status'", (json.dumps("recording"),))
    db.execute("UPDATE meta SET value = 'null' WHERE key = 'ended_at'")
    db.commit()
    db.close()
    out = tmp_path / "cut.html"
    assert run_effmon("report", "cut", "-f", "html", "-o", str(out), env_home=home).returncode == 0
    assert "was not closed by its recorder" in out.read_text()


def test_report_needs_an_output_file_and_an_existing_directory(phases_session, tmp_path):
    res = run_effmon("report", str(phases_session), "-f", "html")
    assert res.returncode == 2 and "-o report.html" in res.stderr
    res = run_effmon("report", str(phases_session), "-f", "html", "-o", str(tmp_path / "no" / "dir" / "r.html"))
    assert res.returncode == 2 and "does not exist" in res.stderr


def _phase_session(home, phase, name):
    """A session made from one phase of the real trace."""
    lines = PHASES_TRACE.read_text().splitlines()
    keep = [lines[0]] + [line for line in lines[1:] if json.loads(line).get("phase") == phase]
    trace = home / f"{name}.jsonl"
    home.mkdir(parents=True, exist_ok=True)
    trace.write_text("\n".join(keep) + "\n")
    assert (
        run_effmon(
            "record", "-q", "--name", name, "--replay", str(trace), "--as-fast-as-possible", env_home=home
        ).returncode
        == 0
    )


def test_compare_two_phases_deltas_and_ranks(tmp_path):
    home = tmp_path / "h"
    _phase_session(home, "matmul_bf16", "matmul")
    _phase_session(home, "copy", "copy")
    res = run_effmon("compare", "matmul", "copy", "-f", "json", env_home=home)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)

    def avg(phase, field="power_w"):
        rows = [x for x in trace_lines() if x["kind"] == "gpu" and x.get("phase") == phase and x.get(field) is not None]
        area = sum((a[field] + b[field]) / 2 * (b["t"] - a["t"]) for a, b in itertools.pairwise(rows))
        return area / (rows[-1]["t"] - rows[0]["t"])

    avg_power = avg
    aec = next(m for m in result["metrics"] if m["key"] == "AEC")
    p_matmul, p_copy = avg_power("matmul_bf16"), avg_power("copy")
    assert aec["values"] == pytest.approx([p_matmul, p_copy], rel=1e-6)
    assert aec["delta"][1] == pytest.approx(p_copy - p_matmul, rel=1e-6)
    assert aec["ratio"][1] == pytest.approx(p_copy / p_matmul, rel=1e-6)
    # lower power is better: the copy phase (less power) ranks 1, the matmul burn 0
    assert aec["normalized"] == [0.0, 1.0]
    pcu = next(m for m in result["metrics"] if m["key"] == "PCU")
    sm = [avg("matmul_bf16", "sm_active_pct") / 100, avg("copy", "sm_active_pct") / 100]
    assert pcu["values"] == pytest.approx(sm, rel=1e-6)
    # higher is better: the run with more SM activity ranks 1 (in this trace the device copy: ~98.7 % vs ~95 %)
    assert pcu["normalized"] == ([1.0, 0.0] if sm[0] > sm[1] else [0.0, 1.0])
    tt = next(m for m in result["metrics"] if m["key"] == "TT")
    assert tt["values"] == [None, None] and tt["missing"] == ["matmul", "copy"]  # N/A, never zero
    assert tt["why"] == ["no training steps", "no training steps"], tt  # and why, in every output
    table = run_effmon("compare", "matmul", "copy", env_home=home)
    assert "N/A in A (TT, ST): no training steps" in table.stdout, table.stdout


def test_compare_html_has_a_radar_chart_and_bad_input_is_clear(tmp_path, phases_session):
    home = tmp_path / "h"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert (
        run_effmon(
            "report", str(phases_session), "--phase", "lora_finetune", "-f", "efficientllm", "-o", str(a)
        ).returncode
        == 0
    )
    assert (
        run_effmon("report", str(phases_session), "--phase", "generate", "-f", "efficientllm", "-o", str(b)).returncode
        == 0
    )
    out = tmp_path / "c.html"
    assert run_effmon("compare", str(a), str(b), "-f", "html", "-o", str(out), env_home=home).returncode == 0
    p = Collector()
    p.feed(out.read_text())
    assert base64.b64decode(p.imgs[0].split(",", 1)[1]).startswith(PNG)
    assert run_effmon("compare", str(a), env_home=home).returncode == 2
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    res = run_effmon("compare", str(a), str(bad), env_home=home)
    assert res.returncode == 2 and "not an effmon export" in res.stderr


def test_chromium_renders_the_html_report_without_console_errors(phases_session, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    out = tmp_path / "r.html"
    assert run_effmon("report", str(phases_session), "-f", "html", "-o", str(out)).returncode == 0
    png = tmp_path / "r.png"
    res = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,2000",
            f"--screenshot={png}",
            out.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert png.read_bytes().startswith(PNG)
    console_errors = [line for line in res.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    assert console_errors == []


def test_a_session_from_a_newer_schema_is_refused_with_the_fix(tmp_path):
    import sqlite3

    home = tmp_path / "h"
    assert (
        run_effmon(
            "record", "-q", "--name", "future", "--replay", str(PHASES_TRACE), "--as-fast-as-possible", env_home=home
        ).returncode
        == 0
    )
    path = home / "sessions" / "future.effmon"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    res = run_effmon("report", str(path), "-f", "html", "-o", str(tmp_path / "r.html"), env_home=home)
    assert res.returncode == 2
    assert "newer effmon (schema 99" in res.stderr and "pip install -U effmon" in res.stderr
    assert not (tmp_path / "r.html").exists()


def test_compare_repeats_show_their_spread_and_the_baseline_mcr_is_one(tmp_path):
    """Repeats joined by commas: the mean of each metric with its spread, from the trace's own power readings;
    a ranking within the spread is flagged; the baseline's MCR is 1 by definition."""
    home = tmp_path / "h"
    _phase_session(home, "matmul_bf16", "matmul")
    _phase_session(home, "copy", "copy")
    _phase_session(home, "idle3", "idle")
    res = run_effmon("compare", "matmul,copy", "idle", "-f", "json", env_home=home)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["repeats"] == {"matmul (+1 repeats)": ["matmul", "copy"]}

    def avg_power(phase):
        rows = [x for x in trace_lines() if x["kind"] == "gpu" and x.get("phase") == phase and x.get("power_w")]
        area = sum((a["power_w"] + b["power_w"]) / 2 * (b["t"] - a["t"]) for a, b in itertools.pairwise(rows))
        return area / (rows[-1]["t"] - rows[0]["t"])

    p = [avg_power("matmul_bf16"), avg_power("copy")]
    aec = next(m for m in result["metrics"] if m["key"] == "AEC")
    assert aec["values"][0] == pytest.approx(sum(p) / 2, rel=1e-6)
    assert aec["spread"][0] == pytest.approx((max(p) - min(p)) / (sum(p) / 2), rel=1e-6)
    assert aec["spread"][1] is None  # one run: no spread
    mcr = next(m for m in result["metrics"] if m["key"] == "MCR")
    assert mcr["values"][0] == 1.0 and mcr["values"][1] is None
    table = run_effmon("compare", "matmul,copy", "idle", env_home=home)
    assert table.returncode == 0 and "MCR of the baseline is 1 by definition" in table.stdout
    assert "±" in table.stdout
