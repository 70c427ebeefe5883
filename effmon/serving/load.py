"""A load generator for OpenAI-compatible servers (vLLM, transformers serve, SGLang, TGI, llama.cpp).

Streams requests at a fixed concurrency (closed loop) or a Poisson rate (open loop) and measures, per
request and on the client side: TTFT to the first chunk that carries generated text (a role-only first
chunk does not count), the gaps between content chunks (ITL, per chunk), TPOT, end-to-end latency, and
the output token count from the server's ``usage`` wherever it sends it (else the content chunks,
labelled so). Failed and cut-off requests are counted apart by kind and never enter latency figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from effmon.core.declare import Row
from effmon.metrics.series import percentile

WORDS = (
    "time energy token model layer memory power batch cache prompt answer server request stream "
    "latency decode prefill kernel tensor weight"
).split()


@dataclass
class LoadConfig:
    url: str
    model: str = "default"
    endpoint: str = "chat"
    concurrency: int = 8
    rate: float | None = None
    duration: float | None = None
    requests: int | None = 100
    prompt_tokens: int = 64
    output_tokens: int = 64
    prompts: list[str] | None = None
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    timeout_s: float = 120.0
    seed: int = 0


@dataclass
class RequestResult:
    t_start: float
    t_end: float
    ttft_s: float | None = None
    first_chunk_s: float | None = None
    gaps: list[float] = field(default_factory=list)
    chunks: int = 0
    output_tokens: int | None = None
    tokens_from_usage: bool = False
    prompt_tokens: int | None = None
    error: str | None = None
    detail: str | None = None
    response_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def e2e_s(self) -> float:
        return self.t_end - self.t_start

    @property
    def tpot_s(self) -> float | None:
        n = self.output_tokens or self.chunks
        if self.ttft_s is None or not n or n < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (n - 1)


def make_prompt(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, tokens)))


def parse_slo(text: str) -> tuple[float | None, float | None]:
    """``ttft=200ms,tpot=50ms`` -> seconds."""
    ttft = tpot = None
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        value = value.strip().lower()
        try:
            seconds = float(value[:-2]) / 1000 if value.endswith("ms") else float(value.rstrip("s"))
        except ValueError:
            raise ValueError(f"--slo {part!r}: use e.g. ttft=200ms,tpot=50ms") from None
        if key.strip() == "ttft":
            ttft = seconds
        elif key.strip() == "tpot":
            tpot = seconds
        else:
            raise ValueError(f"--slo {part!r}: the keys are ttft and tpot")
    return ttft, tpot


class StreamError(Exception):
    """A streamed response that is not what an OpenAI-compatible server sends."""


def _request(cfg: LoadConfig, prompt: str) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any]
    if cfg.endpoint == "chat":
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}]}
    else:
        path, body = "/v1/completions", {"prompt": prompt}
    body.update(
        model=cfg.model,
        max_tokens=cfg.output_tokens,
        stream=True,
        temperature=0,
        stream_options={"include_usage": True},
    )
    return cfg.url.rstrip("/") + path, body


class _Stream:
    """Reads a streamed response line by line into a ``RequestResult``: TTFT at the first chunk that carries
    generated text, gaps between content chunks, the server's usage wherever it sends it."""

    def __init__(self, res: RequestResult, endpoint: str, start: float):
        self.res, self.endpoint, self.start = res, endpoint, start
        self.last_content: float | None = None
        self.finished = False

    def feed(self, raw: bytes, now: float) -> bool:
        """One line of the response; True once the server said the response is complete."""
        line = raw.strip()
        if not line.startswith(b"data:"):
            return False
        data = line[5:].strip()
        if data == b"[DONE]":
            self.finished = True
            return True
        if self.res.first_chunk_s is None:
            self.res.first_chunk_s = now - self.start
        try:
            chunk = json.loads(data)
        except ValueError:
            raise StreamError(data[:200].decode(errors="replace")) from None
        self._chunk(chunk, now)
        return False

    def _chunk(self, chunk: Any, now: float) -> None:
        if not isinstance(chunk, dict):
            raise StreamError(f"a chunk that is not a JSON object: {str(chunk)[:200]}")
        res = self.res
        if res.response_id is None:
            res.response_id = chunk.get("id")
        usage = chunk.get("usage")
        if usage:
            if usage.get("completion_tokens") is not None:
                res.output_tokens, res.tokens_from_usage = int(usage["completion_tokens"]), True
            res.prompt_tokens = usage.get("prompt_tokens")
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content") if self.endpoint == "chat" else choice.get("text")
            if text:
                self._content(now)
            if choice.get("finish_reason"):
                self.finished = True

    def _content(self, now: float) -> None:
        res = self.res
        if res.ttft_s is None:
            res.ttft_s = now - self.start
        elif self.last_content is not None:
            res.gaps.append(now - self.last_content)
        self.last_content = now
        res.chunks += 1


async def _one(session: Any, cfg: LoadConfig, prompt: str) -> RequestResult:
    import aiohttp

    url, body = _request(cfg, prompt)
    start_wall, start = time.time(), time.perf_counter()
    res = RequestResult(t_start=start_wall, t_end=start_wall)
    stream = _Stream(res, cfg.endpoint, start)
    try:
        async with session.post(url, json=body) as resp:
            if resp.status >= 400:
                res.error, res.detail = f"http_{resp.status}", (await resp.text())[:200]
                return res
            async for raw in resp.content:
                if stream.feed(raw, time.perf_counter()):
                    break
            if not stream.finished:
                res.error = "cut_off"  # the stream ended before the server said it was done
    except StreamError as exc:
        res.error, res.detail = "bad_stream", str(exc)
    except asyncio.TimeoutError:
        res.error = "timeout"
    except aiohttp.ClientConnectorError as exc:
        res.error, res.detail = "connect", str(exc)
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        res.error, res.detail = "cut_off", str(exc)
    except aiohttp.ClientError as exc:
        res.error, res.detail = "client_error", str(exc)
    finally:
        res.t_end = start_wall + (time.perf_counter() - start)
    if res.ok and res.ttft_s is None:
        res.error = "no_content"
    if res.ok and not res.tokens_from_usage:
        res.output_tokens = res.chunks
    return res


class DiscoveryError(Exception):
    """The server named no model effmon could use; the message says how to give one."""


def discover_model(url: str, endpoint: str = "chat", timeout_s: float = 30.0) -> str:
    """The model to ask a server for, when the user named none: the one it is pinned to (``transformers serve
    MODEL`` answers a request for another model with HTTP 400 naming it), else the one it lists."""
    import re
    import urllib.error
    import urllib.request

    base = url.rstrip("/")
    probe = json.dumps(
        {"model": "default", "max_tokens": 1, "stream": False}
        | ({"messages": [{"role": "user", "content": "hi"}]} if endpoint == "chat" else {"prompt": "hi"})
    ).encode()
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    request = urllib.request.Request(base + path, probe, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return "default"  # the server takes any model name
    except urllib.error.HTTPError as exc:
        body = exc.read(4096).decode(errors="replace")
        pinned = re.search(r"pinned to '([^']+)'", body)
        if pinned:
            return pinned.group(1)
        if exc.code in (404, 405, 501) and "model" not in body.lower():  # (vLLM: 404 "the model ... does not exist")
            other = "completions" if endpoint == "chat" else "chat"
            raise DiscoveryError(
                f"{base}{path} answered HTTP {exc.code}: is it an OpenAI-compatible server? (or try --endpoint {other})"
            ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise DiscoveryError(f"nothing answers at {base} ({getattr(exc, 'reason', exc)}): is the server up?") from None
    try:
        with urllib.request.urlopen(base + "/v1/models", timeout=timeout_s) as resp:
            models = [m.get("id") for m in json.loads(resp.read()).get("data") or [] if isinstance(m, dict)]
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        models = []
    if len(models) == 1 and models[0]:
        return str(models[0])
    listed = f"it lists {', '.join(map(str, models))}" if models else "it lists none at /v1/models"
    raise DiscoveryError(f"which model should effmon ask {base} for? {listed}; give one with --model NAME")


async def run_load(
    cfg: LoadConfig, on_result: Callable[[RequestResult], None] | None = None, stop: Callable[[], bool] | None = None
) -> tuple[list[RequestResult], float]:
    """Run the load; returns the results and the wall time it took."""
    import aiohttp

    rng = random.Random(cfg.seed)
    prompts = cfg.prompts or [make_prompt(rng, cfg.prompt_tokens) for _ in range(64)]
    results: list[RequestResult] = []
    started = time.perf_counter()
    issued = 0

    def more() -> bool:
        if stop is not None and stop():
            return False
        if cfg.requests is not None and issued >= cfg.requests:
            return False
        return not (cfg.duration is not None and time.perf_counter() - started >= cfg.duration)

    def done(res: RequestResult) -> None:
        results.append(res)
        if on_result is not None:
            on_result(res)

    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if cfg.rate is None:

            async def worker() -> None:
                nonlocal issued
                while more():
                    issued += 1
                    done(await _one(session, cfg, prompts[issued % len(prompts)]))

            await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
        else:
            limit = asyncio.Semaphore(cfg.concurrency if cfg.concurrency > 0 else 1_000_000)
            tasks = []

            async def bounded(prompt: str) -> None:
                async with limit:
                    done(await _one(session, cfg, prompt))

            while more():
                issued += 1
                tasks.append(asyncio.create_task(bounded(prompts[issued % len(prompts)])))
                await asyncio.sleep(rng.expovariate(cfg.rate))
            await asyncio.gather(*tasks)
    return results, time.perf_counter() - started


def summarize(results: list[RequestResult], wall_s: float, cfg: LoadConfig) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    gaps = [g for r in ok for g in r.gaps]
    tpot = [t for r in ok if (t := r.tpot_s) is not None]
    e2e = [r.e2e_s for r in ok]
    tokens = sum(r.output_tokens or 0 for r in ok)

    def pct(values: list[float]) -> dict[str, float | None]:
        return {f"p{q}": percentile(values, q) for q in (50, 90, 95, 99)} | {
            "mean": sum(values) / len(values) if values else None
        }

    good = [
        r
        for r in ok
        if (cfg.slo_ttft_s is None or (r.ttft_s or 0) <= cfg.slo_ttft_s)
        and (cfg.slo_tpot_s is None or (r.tpot_s is not None and r.tpot_s <= cfg.slo_tpot_s))
    ]
    errors = Counter(r.error for r in results if not r.ok)
    return {
        "requests": len(results),
        "succeeded": len(ok),
        "failed": len(results) - len(ok),
        "errors": dict(errors),
        "wall_s": wall_s,
        "request_throughput": len(ok) / wall_s if wall_s else None,
        "output_token_throughput": tokens / wall_s if wall_s else None,
        "output_tokens": tokens,
        "tokens_counted_from": "usage"
        if ok and all(r.tokens_from_usage for r in ok)
        else ("content chunks" if ok and not any(r.tokens_from_usage for r in ok) else "usage where sent, else chunks"),
        "ttft_s": pct(ttft),
        "itl_s": pct(gaps),
        "tpot_s": pct(tpot),
        "e2e_s": pct(e2e),
        "itl_measured": "per content chunk",
        "goodput": {
            "slo_ttft_s": cfg.slo_ttft_s,
            "slo_tpot_s": cfg.slo_tpot_s,
            "requests": len(good),
            "requests_per_s": len(good) / wall_s if wall_s else None,
        },
        "first_error": next((f"{r.error}: {r.detail}" for r in results if not r.ok and r.detail), None),
    }


def request_row(r: RequestResult) -> Row:
    return Row(
        "request",
        {
            "t_start": r.t_start,
            "t_end": r.t_end,
            "requests": 1,
            "prompt_tokens": r.prompt_tokens,
            "generated_tokens": r.output_tokens if r.ok else None,
            "ttft_s": r.ttft_s,
            "tpot_s": r.tpot_s,
            "itl_mean_s": sum(r.gaps) / len(r.gaps) if r.gaps else None,
            "chunks": r.chunks,
            "error": r.error,
            "phase": None,
        },
    )


def print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(
        title=f"effmon load — {s['succeeded']} of {s['requests']} requests succeeded in {s['wall_s']:.1f} s",
        title_justify="left",
    )
    t.add_column("latency")
    for q in ("p50", "p90", "p95", "p99", "mean"):
        t.add_column(q, justify="right")
    for key, label in (
        ("ttft_s", "TTFT (to first content)"),
        ("itl_s", "ITL (per chunk)"),
        ("tpot_s", "TPOT"),
        ("e2e_s", "E2E"),
    ):
        t.add_row(
            label,
            *(
                "N/A" if s[key][q] is None else f"{s[key][q] * 1000:.1f} ms"
                for q in ("p50", "p90", "p95", "p99", "mean")
            ),
        )
    console.print(t)
    console.print(
        f"throughput: {s['request_throughput'] or 0:.2f} requests/s, "
        f"{s['output_token_throughput'] or 0:.1f} output tokens/s (tokens counted from {s['tokens_counted_from']})"
    )
    g = s["goodput"]
    if g["slo_ttft_s"] is not None or g["slo_tpot_s"] is not None:
        console.print(f"goodput: {g['requests']} requests within the SLO, {g['requests_per_s'] or 0:.2f}/s")
    if s["errors"]:
        console.print(
            "[yellow]failed (not in the latency figures): "
            + ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items()))
            + "[/]"
        )
