"""Render the dashboard on the real H100 trace to screenshots/ (SVG, and PNG where Chromium is installed).

    python scripts/screenshots.py

Replays the bundled trace into a temporary session, then renders the dashboard at 120x36 during the
LoRA fine-tune and during batched generation, exactly as the snapshot tests build it; the fleet view
(effmon top --prometheus) of three hosts built from the same trace; and a real fine-tune run here (the lora-tiny
preset on the CPU) at 80x24: mid-run, its loss chart, and its end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHOTS = (
    ("dashboard-lora", 60.0, (120, 36), []),
    ("dashboard-generate", 99.0, (120, 36), []),
    ("dashboard-80x24", 60.0, (80, 24), []),
    ("dashboard-chart", 99.0, (120, 36), ["c"]),
)


async def render(session: Path, offset: float, size: tuple[int, int], keys: list[str], out: Path) -> None:
    from effmon.core.store import SessionReader
    from effmon.tui.app import make_app

    with SessionReader(session) as r:
        lo, _ = r.time_range()
    app = make_app(session, mode="replay", sync=True, paused=True, cursor=lo + offset)
    async with app.run_test(size=size) as pilot:
        for key in keys:
            await pilot.press(key)
        await pilot.pause()
        app.save_screenshot(filename=out.name, path=str(out.parent))


async def render_fleet(keys: list[str], size: tuple[int, int], out: Path) -> None:
    """The fleet view, three hosts of two GPUs built from the trace (tests/fleet_data.py), as its snapshot test."""
    from effmon.tui.fleet import FleetApp
    from tests.fleet_data import trace_fleet

    fleet = trace_fleet()
    app = FleetApp(fleet.url, fleet.match, fixed=(fleet.start, fleet.end), first=fleet)
    async with app.run_test(size=size) as pilot:
        for key in keys:
            await pilot.press(key)
        await pilot.pause()
        app.save_screenshot(filename=out.name, path=str(out.parent))


def chromium_png(uri: str, png: Path, width: int, height: int) -> bool:
    """Headless Chromium's screenshot of a page (flags for a machine with no network)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        return False
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
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
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                f"--screenshot={png}",
                uri,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return True


def to_png(svg: Path, size: tuple[int, int]) -> Path | None:
    png = svg.with_suffix(".png")
    return png if chromium_png(svg.as_uri(), png, size[0] * 12 + 40, size[1] * 24 + 70) else None


def reports(session: Path, out_dir: Path) -> None:
    """A rendered report page and a compare radar chart (LoRA fine-tune vs batched generation)."""
    import json

    from effmon.report.compare import compare, load_run, radar_png

    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "effmon",
                "report",
                str(session),
                "--phase",
                "lora_finetune",
                "-f",
                "html",
                "-o",
                str(html),
            ],
            check=True,
            capture_output=True,
        )
        if chromium_png(html.as_uri(), out_dir / "report-page.png", 1200, 2200):
            print("wrote screenshots/report-page.png")
        runs = []
        for phase in ("lora_finetune", "generate", "matmul_bf16"):
            out = Path(tmp) / f"{phase}.json"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "effmon",
                    "report",
                    str(session),
                    "--phase",
                    phase,
                    "-f",
                    "efficientllm",
                    "-o",
                    str(out),
                ],
                check=True,
                capture_output=True,
            )
            runs.append(load_run(str(out)))
        (out_dir / "compare-radar.png").write_bytes(radar_png(compare(runs)))
        print("wrote screenshots/compare-radar.png", json.dumps([r["name"] for r in runs]))


def finetune_shots(out_dir: Path) -> None:
    """A real fine-tune (the lora-tiny preset, 150 steps on the CPU) recorded as `effmon run` records it, with
    the dashboard on it at 80x24: mid-run (step N / total, time left, the loss), its loss chart, and its end."""
    import threading

    from effmon.presets import load
    from effmon.recording import RecordOptions
    from effmon.training.run import run_training
    from effmon.tui.app import make_app

    opened, holder = threading.Event(), {}

    def on_open(rec: object) -> None:
        holder["path"] = rec.path  # type: ignore[attr-defined]
        opened.set()

    preset = load("lora-tiny", ["steps=150"])
    job = threading.Thread(
        target=lambda: run_training([], preset, RecordOptions(quiet=True), on_open=on_open, capture_output=True),
        daemon=True,
    )
    job.start()
    opened.wait(300)

    async def shoot() -> None:
        app = make_app(holder["path"], refresh_s=0.5)
        async with app.run_test(size=(80, 24)) as pilot:
            while not (app.snap and app.snap.progress and app.snap.progress.done >= 60):
                await pilot.pause(0.2)
            await pilot.pause(1.0)
            app.save_screenshot(filename="finetune-live.svg", path=str(out_dir))
            await pilot.press("c")
            await pilot.pause(1.0)
            app.save_screenshot(filename="finetune-loss-chart.svg", path=str(out_dir))
            await pilot.press("c")
            while not (app.snap and app.snap.state != "recording"):
                await pilot.pause(0.3)
            await pilot.pause(1.5)
            app.save_screenshot(filename="finetune-end.svg", path=str(out_dir))

    asyncio.run(shoot())
    job.join(120)
    for name in ("finetune-live", "finetune-loss-chart", "finetune-end"):
        png = to_png(out_dir / f"{name}.svg", (80, 24))
        print(f"wrote screenshots/{name}.svg" + (f" and {png.relative_to(ROOT)}" if png else ""))


def main() -> None:
    from effmon.recording import RecordOptions, record_replay
    from effmon.sources.trace import bundled_trace_path

    out_dir = ROOT / "screenshots"
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        os.environ["EFFMON_HOME"] = home
        record_replay(str(bundled_trace_path()), RecordOptions(name="h100", quiet=True), as_fast_as_possible=True)
        session = Path(home) / "sessions" / "h100.effmon"
        reports(session, out_dir)
        finetune_shots(out_dir)
        for name, offset, size, keys in SHOTS:
            svg = out_dir / f"{name}.svg"
            asyncio.run(render(session, offset, size, keys, svg))
            png = to_png(svg, size)
            print(f"wrote {svg.relative_to(ROOT)}" + (f" and {png.relative_to(ROOT)}" if png else ""))
    os.environ["TZ"] = "UTC"  # the fixed window's clock times, as in the snapshot test
    time.tzset()
    for name, keys in (("fleet", []), ("fleet-host", ["down", "enter"])):
        svg = out_dir / f"{name}.svg"
        asyncio.run(render_fleet(keys, (100, 30), svg))
        png = to_png(svg, (100, 30))
        print(f"wrote {svg.relative_to(ROOT)}" + (f" and {png.relative_to(ROOT)}" if png else ""))


if __name__ == "__main__":
    main()
