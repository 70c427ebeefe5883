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
    max_failures: float = 0.1
    """The share of failed requests above which the load counts as failed (``--max-failures``)."""


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


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StreamError(f"{what} that is not a JSON object: {str(value)[:200]}")
    return value


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise StreamError(f"usage.{key} is not a token count: {str(value)[:100]}")
    return int(value)


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
        self._chunk(_object(chunk, "a chunk"), now)
        return False

    def _chunk(self, chunk: Any, now: float) -> None:
        """One JSON chunk. Anything not shaped as the OpenAI stream is (a non-object choice, delta or usage, a
        token count that is not a number) fails this request with what was wrong, never the load."""
        res = self.res
        if res.response_id is None and isinstance(chunk.get("id"), str):
            res.response_id = chunk["id"]
        if chunk.get("usage"):
            self._usage(_object(chunk["usage"], "usage"))
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise StreamError(f"choices that are not a list: {str(choices)[:200]}")
        for choice in map(lambda c: _object(c, "a choice"), choices):
            text = (
                _object(choice.get("delta") or {}, "a delta").get("content")
                if self.endpoint == "chat"
                else choice.get("text")
            )
            if text:
                self._content(now)
            if choice.get("finish_reason"):
                self.finished = True

    def _usage(self, usage: dict[str, Any]) -> None:
        if usage.get("completion_tokens") is not None:
            self.res.output_tokens, self.res.tokens_from_usage = _count(usage, "completion_tokens"), True
        if usage.get("prompt_tokens") is not None:
            self.res.prompt_tokens = _count(usage, "prompt_tokens")

    def _content(self, now: float) -> None:
        res = self.res
        if res.ttft_s is None:
            res.ttft_s = now - self.start
        elif self.last_content is not None:
            res.gaps.append(now - self.last_content)
        self.last_content = now
        res.chunks += 1


MAX_LINE = 512 * 1024
"""The longest streamed line read (aiohttp reads a line up to twice its buffer size); a longer one fails its
request (bad_stream), never the load."""


async def _one(session: Any, cfg: LoadConfig, prompt: str) -> RequestResult:
    """One request, whatever happens: an error is a kind and a detail on its result, never an exception (a
    Ctrl-C cancels it: ``cancelled``)."""
    import aiohttp

    url, body = _request(cfg, prompt)
    start_wall, start = time.time(), time.perf_counter()
    res = RequestResult(t_start=start_wall, t_end=start_wall)
    stream = _Stream(res, cfg.endpoint, start)
    try:
        async with session.post(url, json=body) as resp:
            if resp.status >= 400:
                res.error, res.detail = f"http_{resp.status}", (await resp.text(errors="replace"))[:200]
                return res
            async for raw in resp.content:
                if stream.feed(raw, time.perf_counter()):
                    break
            if not stream.finished:
                res.error = "cut_off"  # the stream ended before the server said it was done
    except (StreamError, asyncio.CancelledError, asyncio.TimeoutError, aiohttp.ClientError, ValueError) as exc:
        res.error, res.detail = _failure(exc)
    except Exception as exc:  # anything else a server can make a client library raise (LineTooLong ...)
        res.error, res.detail = _failure(exc)
    finally:
        res.t_end = start_wall + (time.perf_counter() - start)
    if res.ok and res.ttft_s is None:
        res.error = "no_content"
    if res.ok and not res.tokens_from_usage:
        res.output_tokens = res.chunks
    return res


def _failure(exc: BaseException) -> tuple[str, str | None]:
    """The kind (and detail) of a request's failure."""
    import aiohttp

    kinds: list[tuple[type[BaseException] | tuple[type[BaseException], ...], str]] = [
        (StreamError, "bad_stream"),
        (asyncio.CancelledError, "cancelled"),
        (asyncio.TimeoutError, "timeout"),
        (aiohttp.ClientConnectorError, "connect"),
        ((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError), "cut_off"),
        (aiohttp.ClientError, "client_error"),
    ]
    for types, kind in kinds:
        if isinstance(exc, types):
            detail = {"cancelled": "the load was stopped while this request ran", "timeout": None}.get(kind, str(exc))
            return kind, detail
    if isinstance(exc, ValueError) or type(exc).__name__ == "LineTooLong":
        return "bad_stream", f"a streamed line over {MAX_LINE // 1024} KiB ({type(exc).__name__})"
    return "client_error", f"{type(exc).__name__}: {str(exc)[:200]}"


RETRYABLE = ("connect", "timeout", "cut_off", "client_error")
"""Errors after which the next request waits (the server may be down or overloaded); http_5xx too."""


class Backoff:
    """Waits between requests while they fail the way a down or overloaded server fails: 50 ms, doubling to 2 s;
    one success ends it."""

    FIRST_S, MAX_S = 0.05, 2.0

    def __init__(self) -> None:
        self.delay = 0.0

    def record(self, res: RequestResult) -> None:
        failing = res.error in RETRYABLE or (res.error or "").startswith("http_5")
        self.delay = min(self.MAX_S, max(self.FIRST_S, self.delay * 2)) if failing else 0.0

    async def wait(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)


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
    cfg: LoadConfig,
    on_result: Callable[[RequestResult], None] | None = None,
    stop: Callable[[], bool] | None = None,
    results: list[RequestResult] | None = None,
) -> tuple[list[RequestResult], float]:
    """Run the load; returns the results and the wall time it took. Finished requests go into ``results`` (the
    caller's list, kept whatever ends the load) as they finish. When ``stop()`` turns true, no request starts
    and those in flight are cancelled (``cancelled``, kept apart from the failures)."""
    run = _LoadRun(cfg, on_result, stop or (lambda: False), [] if results is None else results)
    await run.run()
    return run.results, time.perf_counter() - run.started


class _LoadRun:
    def __init__(
        self,
        cfg: LoadConfig,
        on_result: Callable[[RequestResult], None] | None,
        stop: Callable[[], bool],
        results: list[RequestResult],
    ):
        self.cfg, self.on_result, self.stop, self.results = cfg, on_result, stop, results
        self.rng = random.Random(cfg.seed)
        self.prompts = cfg.prompts or [make_prompt(self.rng, cfg.prompt_tokens) for _ in range(64)]
        self.started = time.perf_counter()
        self.issued = 0
        self.backoff = Backoff()
        self.inflight: set[asyncio.Task[RequestResult]] = set()

    def more(self) -> bool:
        cfg = self.cfg
        if self.stop() or (cfg.requests is not None and self.issued >= cfg.requests):
            return False
        return not (cfg.duration is not None and time.perf_counter() - self.started >= cfg.duration)

    def next_prompt(self) -> str:
        self.issued += 1
        return self.prompts[self.issued % len(self.prompts)]

    async def request(self, session: Any, prompt: str) -> None:
        task = asyncio.create_task(_one(session, self.cfg, prompt))
        self.inflight.add(task)
        try:
            res = await task
        finally:
            self.inflight.discard(task)
        self.backoff.record(res)
        self.results.append(res)
        if self.on_result is not None:
            self.on_result(res)

    async def cancel_when_stopped(self) -> None:
        while not self.stop():
            await asyncio.sleep(0.1)
        for task in list(self.inflight):
            task.cancel()

    async def run(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, read_bufsize=MAX_LINE // 2) as session:
            watcher = asyncio.create_task(self.cancel_when_stopped())
            await (self.closed_loop(session) if self.cfg.rate is None else self.open_loop(session, self.cfg.rate))
            watcher.cancel()

    async def closed_loop(self, session: Any) -> None:
        """``concurrency`` workers, each sending its next request when the last one ends."""

        async def worker() -> None:
            while self.more():
                await self.backoff.wait()
                if self.more():
                    await self.request(session, self.next_prompt())

        await asyncio.gather(*(worker() for _ in range(self.cfg.concurrency)))

    async def open_loop(self, session: Any, rate: float) -> None:
        """Poisson arrivals at ``rate``, at most ``concurrency`` in flight."""
        limit = asyncio.Semaphore(self.cfg.concurrency if self.cfg.concurrency > 0 else 1_000_000)
        tasks = []

        async def bounded(prompt: str) -> None:
            async with limit:
                if not self.stop():
                    await self.request(session, prompt)

        while self.more():
            tasks.append(asyncio.create_task(bounded(self.next_prompt())))
            await asyncio.sleep(self.rng.expovariate(rate) + self.backoff.delay)
        await asyncio.gather(*tasks)


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
    errors = Counter(r.error for r in results if not r.ok and r.error != "cancelled")
    cancelled = sum(r.error == "cancelled" for r in results)
    finished = len(results) - cancelled
    return {
        "requests": len(results),
        "succeeded": len(ok),
        "failed": finished - len(ok),
        "cancelled": cancelled,
        "failure_share": (finished - len(ok)) / finished if finished else None,
        "max_failures": cfg.max_failures,
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
        "first_error": next(
            (f"{r.error}: {r.detail}" for r in results if not r.ok and r.detail and r.error != "cancelled"), None
        ),
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
    if s.get("cancelled"):
        console.print(f"[yellow]cancelled when the load was stopped: {s['cancelled']} (not counted as failed)[/]")


def verdict(s: dict[str, Any]) -> str | None:
    """Why the load as a whole failed (None when it did not): no success, or more failures than allowed."""
    if s["succeeded"] == 0 and s["requests"] - s.get("cancelled", 0) > 0:
        return "no request succeeded"
    share = s.get("failure_share")
    if share is not None and share > s.get("max_failures", 1.0):
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items()))
        return (
            f"{s['failed']} of {s['failed'] + s['succeeded']} requests failed ({share:.0%}, more than --max-failures "
            f"{s['max_failures']:.0%}): {kinds}"
        )
    return None
