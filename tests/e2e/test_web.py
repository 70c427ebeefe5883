"""``effmon web`` (issue 17): a real headless Chromium, driven over the DevTools protocol, opens the page, receives
the dashboard's screen over textual-serve's websocket, and presses q, which ends that tab's dashboard."""

import asyncio
import base64
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("textual_serve")
aiohttp = pytest.importorskip("aiohttp")

from tests.conftest import free_port, run_effmon  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def start_web(tmp_path, *args: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, EFFMON_HOME=str(tmp_path / "h"))
    proc = subprocess.Popen([sys.executable, "-m", "effmon", "web", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    line = proc.stderr.readline()
    m = re.search(r" at (http://\S+) ", line)
    assert m, line + (proc.stderr.read() if proc.poll() is not None else "")
    url = m.group(1)
    base = url.split("/?")[0]
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/static/", timeout=1)
            return proc, url
        except urllib.error.HTTPError:
            return proc, url  # it answers (a 403 without the token is an answer)
        except OSError:
            assert proc.poll() is None and time.time() < deadline, "effmon web never listened"
            time.sleep(0.1)


def dashboards(web: subprocess.Popen) -> list:
    """The dashboard processes textual-serve started for the browser's tabs."""
    import psutil

    try:
        children = psutil.Process(web.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for c in children:
        try:
            if "effmon" in " ".join(c.cmdline()) and "web" not in c.cmdline():
                out.append(c)
        except psutil.NoSuchProcess:
            continue
    return out


class DevTools:
    """The page of a headless Chromium, over the DevTools protocol (a websocket, aiohttp's client)."""

    def __init__(self, ws):
        self.ws, self.next_id, self.frames = ws, 0, []

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            self._event(msg)
            if msg.get("id") == self.next_id:
                return msg.get("result", {})

    def _event(self, msg: dict) -> None:
        if msg.get("method") == "Network.webSocketFrameReceived":
            resp = msg["params"]["response"]
            data = resp["payloadData"]
            self.frames.append(base64.b64decode(data) if resp.get("opcode") == 2 else data.encode())

    async def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self._event(await self.ws.receive_json(timeout=max(0.05, end - time.monotonic())))
            except asyncio.TimeoutError:
                return

    def screen(self) -> str:
        return b"".join(self.frames).decode("utf-8", errors="replace")


async def drive(url: str, profile: str, web: subprocess.Popen) -> tuple[str, bool, int]:
    port = free_port()
    browser = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                                f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                        pages = [t for t in await resp.json() if t["type"] == "page"]
                    if pages:
                        break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "Chromium's DevTools endpoint never answered"
                await asyncio.sleep(0.2)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = DevTools(ws)
                await page.call("Network.enable")
                await page.call("Page.enable")
                await page.call("Page.navigate", url=url)
                deadline = time.monotonic() + 60
                while "EfficientLLM" not in page.screen():
                    assert time.monotonic() < deadline, "the dashboard never reached the page: " + page.screen()[-500:]
                    await page.pump(0.5)
                running = len(dashboards(web))
                await page.call("Runtime.evaluate", expression="document.querySelector('textarea')?.focus(); 1")
                await page.call("Input.dispatchKeyEvent", type="keyDown", key="q", text="q", code="KeyQ")
                await page.call("Input.dispatchKeyEvent", type="keyUp", key="q", code="KeyQ")
                deadline = time.monotonic() + 30
                while dashboards(web) and time.monotonic() < deadline:
                    await page.pump(0.5)
                return page.screen(), not dashboards(web), running
    finally:
        browser.kill()
        browser.wait(10)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)")
def test_a_browser_sees_the_dashboard_and_q_ends_it(tmp_path):
    web, url = start_web(tmp_path, "--port", str(free_port()), "--", "demo", "--speed", "2")
    try:
        assert url.startswith("http://127.0.0.1:") and "token" not in url  # loopback: no token needed
        from tests.e2e.test_security import _listening

        listening = _listening(web.pid)
        assert listening and all(ip == "127.0.0.1" for ip, _ in listening), listening
        screen, ended, running = asyncio.run(drive(url, str(tmp_path / "profile"), web))
    finally:
        web.terminate()
        web.wait(20)
    assert running == 1, "the page did not start its own dashboard"
    plain = re.sub(r"\x1b\[[0-9;?$]*[a-zA-Z]", "", screen)  # the terminal output, without its escape codes
    assert "EfficientLLM so far" in plain and "throughput" in plain  # the dashboard's own screen reached the page
    assert ended, "q in the browser did not end the tab's dashboard"
    sessions = list((tmp_path / "h" / "sessions").glob("*.effmon"))
    assert len(sessions) == 1  # the tab's demo recorded its session


def test_bound_beyond_loopback_the_page_needs_the_printed_token(tmp_path):
    web, url = start_web(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()), "--", "demo")
    try:
        assert "/?token=" in url
        token = url.split("token=")[1]
        base = f"http://127.0.0.1:{url.split(':')[-1].split('/')[0]}"
        for bad in ("/", "/?token=wrong", "/ws"):
            with pytest.raises(urllib.error.HTTPError) as no:
                urllib.request.urlopen(base + bad, timeout=5)
            assert no.value.code == 403
        page = urllib.request.urlopen(f"{base}/?token={token}", timeout=5)
        assert page.status == 200 and "effmon_web_token" in page.headers.get("Set-Cookie", "")
    finally:
        web.terminate()
        web.wait(20)


def test_web_without_textual_serve_says_what_to_install(tmp_path):
    from tests.e2e.test_first_contact import hidden

    env = dict(os.environ, EFFMON_HOME=str(tmp_path / "h"), **hidden(tmp_path, "textual_serve"))
    res = subprocess.run([sys.executable, "-m", "effmon", "web"], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and "pip install 'effmon[web]'" in res.stderr and "Traceback" not in res.stderr
    assert run_effmon("web", "--port", "70000").returncode == 2
