"""A load generator for OpenAI-compatible servers (vLLM, transformers serve, SGLang, TGI, llama.cpp).

Streams requests at a fixed concurrency (closed loop) or a Poisson rate (open loop) and measures, per
request and on the client side: TTFT to the first chunk that carries generated text (a role-only first
chunk does not count), end-to-end latency, the gaps between content chunks (ITL per chunk) and, where the
tokens are known, ITL per token and TPOT. Output tokens come from the server's ``usage`` wherever it sends
them, else from the model's tokenizer or the server's ``/tokenize`` (effmon.serving.tokens); without any of
them the figures say chunks, never tokens. Failed and cut-off requests are counted apart by kind and never
enter latency figures. The client watches its own event loop and CPU (effmon.serving.clientwatch) and says
when it, not the server, was the bottleneck.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from effmon.core.declare import Row
from effmon.metrics.series import percentile
from effmon.serving.clientwatch import ClientWatch, affected
from effmon.serving.tokens import LocalTokenizer, ServerTokenizer, per_token_gaps

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
    tokenizer: str | None = None
    """A local model folder (or tokenizer.json) to count tokens with; "server" for its /tokenize only; "none"
    to count none; None: the server's /tokenize where it has one."""


@dataclass
class RequestResult:
    t_start: float
    t_end: float
    ttft_s: float | None = None
    first_chunk_s: float | None = None
    gaps: list[float] = field(default_factory=list)
    chunks: int = 0
    output_tokens: int | None = None
    """Generated tokens, when known (``tokens_from`` says how); None: only chunks were counted."""
    tokens_from: str | None = None
    """usage, tokenizer, server (its /tokenize) or None."""
    pieces: list[str] = field(default_factory=list)
    """The text of each content chunk, until the tokens are counted."""
    chunk_tokens: list[int] | None = None
    """Tokens in each content chunk, when known (a tokenizer, or usage equal to the chunks)."""
    counted_tokens: int | None = None
    """The tokenizer's count where usage gave the tokens (how well the two agree)."""
    prompt_tokens: int | None = None
    error: str | None = None
    detail: str | None = None
    response_id: str | None = None
    send_delay_s: float | None = None
    """From the request's start to its headers on the wire: the client's own queue (a burst of starts, a busy
    loop, a new connection), which TTFT and E2E include and the server never saw."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def e2e_s(self) -> float:
        return self.t_end - self.t_start

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: per token, so only when the tokens are known."""
        n = self.output_tokens
        if self.ttft_s is None or not n or n < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (n - 1)

    @property
    def itl_token(self) -> list[float]:
        """Inter-token latency per token (empty when the tokens of each chunk are not known)."""
        return per_token_gaps(self.gaps, self.chunk_tokens) if self.chunk_tokens else []


def jsonl_prompts(text: str, where: str) -> list[str]:
    """Prompts from JSON lines, one ``{"prompt": ...}`` (or ``{"text": ...}``) object a line, blank lines skipped:
    the prompt files of ``effmon load --prompts`` and ``effmon sweep --tasks``. ValueError says the line."""
    prompts = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise ValueError(f'{where}:{lineno}: not JSON; one {{"prompt": ...}} object a line') from None
        found = obj.get("prompt") or obj.get("text") if isinstance(obj, dict) else None
        if not found:
            raise ValueError(f"{where}:{lineno}: no 'prompt' or 'text' field")
        prompts.append(str(found))
    return prompts


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
                self._content(now, str(text))
            if choice.get("finish_reason"):
                self.finished = True

    def _usage(self, usage: dict[str, Any]) -> None:
        if usage.get("completion_tokens") is not None:
            self.res.output_tokens, self.res.tokens_from = _count(usage, "completion_tokens"), "usage"
        if usage.get("prompt_tokens") is not None:
            self.res.prompt_tokens = _count(usage, "prompt_tokens")

    def _content(self, now: float, text: str) -> None:
        res = self.res
        if res.ttft_s is None:
            res.ttft_s = now - self.start
        elif self.last_content is not None:
            res.gaps.append(now - self.last_content)
        self.last_content = now
        res.chunks += 1
        res.pieces.append(text)


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
    sent = SentAt(start)
    try:
        async with session.post(url, json=body, trace_request_ctx=sent) as resp:
            res.send_delay_s = sent.delay_s
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
    return res


class SentAt:
    """A request's start and, once aiohttp has written its headers, how long after the start that was."""

    def __init__(self, start: float):
        self.start = start
        self.delay_s: float | None = None


async def _headers_sent(session: Any, ctx: Any, params: Any) -> None:
    """aiohttp trace hook: stamp the moment a request's headers went out (its body follows in the same write)."""
    sent = ctx.trace_request_ctx
    if isinstance(sent, SentAt) and sent.delay_s is None:
        sent.delay_s = time.perf_counter() - sent.start


def trace_sends() -> Any:
    import aiohttp

    config = aiohttp.TraceConfig()
    config.on_request_headers_sent.append(_headers_sent)
    return config


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


class LoadProgress:
    """``effmon load: request 120/400 (30%) · 35.0 s elapsed · 1m20s left`` every ``every_s`` seconds as requests
    end (a duration-bound load: time left is the duration's rest)."""

    def __init__(self, cfg: LoadConfig, say: Callable[[str], None], every_s: float | None = None):
        self.cfg, self.say = cfg, say
        if every_s is None:
            try:
                every_s = float(os.environ.get("EFFMON_PROGRESS_EVERY_S") or 10.0)
            except ValueError:
                every_s = 10.0
        self.every_s = max(0.2, every_s)
        self.started = time.time()
        self.last_said = self.started
        self.ends: list[tuple[float, int]] = []

    def ended(self, result: RequestResult) -> None:
        now = time.time()
        self.ends.append((now, len(self.ends) + 1))
        if now - self.last_said >= self.every_s:
            self.last_said = now
            self.say(f"effmon load: {self.now(now).line()}")

    def now(self, now: float) -> Any:
        from effmon.metrics.progress import progress

        done = progress(self.ends[-40:], started_at=self.started, now=now, total=self.cfg.requests, unit="request")
        if self.cfg.duration is not None and self.cfg.requests is None:
            left = max(0.0, self.cfg.duration - (now - self.started))
            done = dataclasses.replace(done, left_s=left)
        return done


def record_load(
    rec: Any,
    cfg: LoadConfig,
    stop: Callable[[], bool],
    counter: LocalTokenizer | ServerTokenizer | None | str = "auto",
    say: Callable[[str], None] | None = None,
) -> tuple[list[RequestResult], LoadSummary]:
    """Run the load into an open Recording ``rec``: a request row as each request ends, then the summary (with
    what the client's watch saw) in the session's meta, and a warning there when the client was saturated.
    Returns every finished request (whatever stopped the load) and the summary. ``say``: where progress lines go
    (requests done / total, elapsed, time left; every 10 s)."""
    from effmon.core.redact import redact_obj

    results: list[RequestResult] = []
    watch = ClientWatch()
    started = time.perf_counter()
    shown = LoadProgress(cfg, say) if say is not None else None

    def ended(r: RequestResult) -> None:
        rec.add([request_row(r)])
        if shown is not None:
            shown.ended(r)

    asyncio.run(run_load(cfg, ended, stop, results=results, watch=watch, counter=counter))
    wall = time.perf_counter() - started
    client = watch.report(sum(r.chunks for r in results), cfg.concurrency or len(results))
    summary = summarize(results, wall, cfg, client)
    summary.first_error = redact_obj(summary.first_error)  # an error text may echo a key
    rec.set_meta(load_summary=summary.to_json())
    if client["saturated"]:
        rec.notice("warning", saturation_warning(client))
    return results, summary


@dataclass
class LoadRun:
    """A recorded load (``effmon load``): its session, every request that ended, the summary, how it ended."""

    path: Any
    results: list[RequestResult]
    summary: LoadSummary
    ending: Any


def load_session(
    cfg: LoadConfig,
    counter: LocalTokenizer | ServerTokenizer | None,
    *,
    name: str | None,
    command: list[str],
    announce: Callable[[Any], None] = lambda path: None,
    say: Callable[[str], None] | None = None,
) -> LoadRun:
    """Run the load into a new session of its own and end it: complete, failed (``verdict``), or interrupted by a
    stop request (the requests that ended are kept). ``announce`` is told the session's path once it exists."""
    from effmon.recording import EXIT_INTERRUPTED, Ending, Interrupts, Recording, RecordOptions

    rec = Recording(
        "load",
        RecordOptions(name=name, quiet=True),
        slug="load",
        meta={
            "command": command,
            "run_kind": "inference",
            "load": {k: v for k, v in vars(cfg).items() if k != "prompts"},
        },
    )
    with Interrupts() as intr, rec:
        path = rec.open()
        rec.start()
        announce(path)
        results, summary = record_load(rec, cfg, lambda: intr.count > 0, counter, say)
        failed = verdict(summary)

        def interrupted(intr: Interrupts) -> Ending:
            why = f"stopped by {intr.last_name} after {len(results)} requests"
            return Ending("interrupted", why, EXIT_INTERRUPTED)

        ending = rec.run_until(
            intr,
            done=lambda: None if intr.count else Ending("failed" if failed else "complete", failed or "the load ended"),
            on_stop=interrupted,
        )
    return LoadRun(path, results, summary, ending)


def token_counter(cfg: LoadConfig) -> LocalTokenizer | ServerTokenizer | None:
    """How the load counts tokens the server's usage does not give (``cfg.tokenizer``); raises TokenizerError
    for a tokenizer that cannot be used, before any request."""
    if cfg.tokenizer == "none":
        return None
    if cfg.tokenizer not in (None, "server"):
        return LocalTokenizer(cfg.tokenizer)
    server = ServerTokenizer(cfg.url, cfg.model)
    return server if server.probe() else None


async def run_load(
    cfg: LoadConfig,
    on_result: Callable[[RequestResult], None] | None = None,
    stop: Callable[[], bool] | None = None,
    results: list[RequestResult] | None = None,
    watch: ClientWatch | None = None,
    counter: LocalTokenizer | ServerTokenizer | None | str = "auto",
) -> tuple[list[RequestResult], float]:
    """Run the load; returns the results and the wall time it took. Finished requests go into ``results`` (the
    caller's list, kept whatever ends the load) as they finish. When ``stop()`` turns true, no request starts
    and those in flight are cancelled (``cancelled``, kept apart from the failures). ``watch`` (when given)
    watches the client's own loop and CPU meanwhile; ``counter`` counts tokens where usage is missing ("auto":
    :func:`token_counter`)."""
    if counter == "auto":
        counter = token_counter(cfg)
    assert not isinstance(counter, str)
    run = _LoadRun(cfg, on_result, stop or (lambda: False), [] if results is None else results, counter)
    watcher = asyncio.create_task((watch or ClientWatch()).run())
    try:
        await run.run()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    return run.results, time.perf_counter() - run.started


class _LoadRun:
    def __init__(
        self,
        cfg: LoadConfig,
        on_result: Callable[[RequestResult], None] | None,
        stop: Callable[[], bool],
        results: list[RequestResult],
        counter: LocalTokenizer | ServerTokenizer | None = None,
    ):
        self.cfg, self.on_result, self.stop, self.results = cfg, on_result, stop, results
        self.counter = counter
        self.counting: set[asyncio.Task[None]] = set()
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
        if res.ok and res.output_tokens is None and isinstance(self.counter, ServerTokenizer):
            counting = asyncio.create_task(self.server_count(session, res))  # the next request need not wait
            self.counting.add(counting)
            counting.add_done_callback(self.counting.discard)
            return
        if res.ok and isinstance(self.counter, LocalTokenizer):
            counts = self.counter.chunk_counts(res.pieces)
            res.chunk_tokens = counts
            if res.output_tokens is None:
                res.output_tokens, res.tokens_from = sum(counts), "tokenizer"
            else:
                res.counted_tokens = sum(counts)
        elif res.ok and res.output_tokens is not None and res.output_tokens == res.chunks:
            res.chunk_tokens = [1] * res.chunks  # as many tokens as chunks: one a chunk
        self.finish(res)

    async def server_count(self, session: Any, res: RequestResult) -> None:
        assert isinstance(self.counter, ServerTokenizer)
        count = await self.counter.count(session, "".join(res.pieces))
        if count is not None:
            res.output_tokens, res.tokens_from = count, "server"
            if count == res.chunks:
                res.chunk_tokens = [1] * res.chunks
        self.finish(res)

    def finish(self, res: RequestResult) -> None:
        res.pieces = []  # counted: the text is not kept
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
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, read_bufsize=MAX_LINE // 2, trace_configs=[trace_sends()]
        ) as session:
            watcher = asyncio.create_task(self.cancel_when_stopped())
            await (self.closed_loop(session) if self.cfg.rate is None else self.open_loop(session, self.cfg.rate))
            if self.counting:  # counts asked of the server's /tokenize (a few ms each)
                await asyncio.wait(self.counting, timeout=30)
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


TOKENS_FROM = {"usage": "the server's usage", "tokenizer": "the model's tokenizer", "server": "the server's /tokenize"}


def _tokens_counted_from(ok: list[RequestResult]) -> str:
    kinds = Counter(r.tokens_from for r in ok)
    if not ok:
        return "no request succeeded"
    if None in kinds:
        return (
            f"not counted for {kinds[None]} of {len(ok)} requests: the server sent no usage; give "
            "--tokenizer MODEL_DIR (or use a server with /tokenize) to count tokens"
        )
    return ", else ".join(TOKENS_FROM[k] for k in ("usage", "tokenizer", "server") if k in kinds)


QUANTILES = ("p50", "p90", "p95", "p99", "mean")


@dataclass
class Quantiles:
    """A latency's distribution over the requests that succeeded (percentiles as the metric registry takes them)."""

    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None

    @staticmethod
    def of(values: list[float]) -> Quantiles:
        p50, p90, p95, p99 = (percentile(values, q) for q in (50, 90, 95, 99))
        return Quantiles(p50, p90, p95, p99, sum(values) / len(values) if values else None)


@dataclass
class Goodput:
    """Requests within the SLOs (--slo), or why that could not be checked."""

    slo_ttft_s: float | None
    slo_tpot_s: float | None
    requests: int | None
    requests_per_s: float | None
    why_not: str | None


LATENCIES = ("ttft_s", "itl_s", "itl_chunk_s", "tpot_s", "e2e_s")
FIGURES = ("generated_tokens_per_s", "requests_per_s", "TTFT_p50", "TTFT_p95", "TTFT_p99", "E2E_p50", "E2E_p99")
"""The registry's figures of the load's requests, over the time they were in flight: what ``effmon report`` says
of the same requests (IT, requests/s, the percentiles)."""


@dataclass
class LoadSummary:
    """What a load run measured. Throughput here is over the run's wall time (as ``vllm bench serve`` states it);
    ``figures`` holds the registry's figures of the same requests (IT: generated tokens over the time a request
    was in flight), which ``effmon report`` shows for the session."""

    requests: int
    succeeded: int
    failed: int
    cancelled: int
    failure_share: float | None
    max_failures: float
    errors: dict[str, int]
    wall_s: float
    request_throughput: float | None
    output_token_throughput: float | None
    output_tokens: int | None
    chunks: int
    chunk_throughput: float | None
    tokens_counted_from: str
    tokenizer_vs_usage: float | None
    latency: dict[str, Quantiles]
    """By LATENCIES key: ttft_s, itl_s (per token), itl_chunk_s, tpot_s, e2e_s."""
    itl_measured: str
    goodput: Goodput
    client: dict[str, Any] | None
    """What the client's watch saw (ClientWatch.report), with the figures its own delay may have moved."""
    first_error: str | None
    figures: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``-o`` / ``--json`` document and the session's ``load_summary``: latencies at the top level."""
        doc = dataclasses.asdict(self)
        latency = doc.pop("latency")
        figures = doc.pop("figures")
        return {**doc, **latency, "figures": figures}


def _itl_measured(ok: list[RequestResult]) -> str:
    share = sum(1 for r in ok if r.chunk_tokens) / len(ok) if ok else 0.0
    if share == 1.0:
        return "per token (tokens per chunk known)"
    if share:
        return f"per token for {share:.0%} of the requests (tokens per chunk known there)"
    return "per chunk only: the tokens of each chunk are not known (give --tokenizer MODEL_DIR)"


def _goodput(ok: list[RequestResult], cfg: LoadConfig, wall_s: float, tokens_known: bool) -> Goodput:
    if cfg.slo_tpot_s is not None and not tokens_known:
        why = "the TPOT SLO is per token and the tokens were not counted (give --tokenizer MODEL_DIR)"
        return Goodput(cfg.slo_ttft_s, cfg.slo_tpot_s, None, None, why)
    good = [
        r
        for r in ok
        if (cfg.slo_ttft_s is None or (r.ttft_s or 0) <= cfg.slo_ttft_s)
        and (cfg.slo_tpot_s is None or (r.tpot_s is not None and r.tpot_s <= cfg.slo_tpot_s))
    ]
    return Goodput(cfg.slo_ttft_s, cfg.slo_tpot_s, len(good), len(good) / wall_s if wall_s else None, None)


def _latency(ok: list[RequestResult]) -> dict[str, Quantiles]:
    return {
        "ttft_s": Quantiles.of([r.ttft_s for r in ok if r.ttft_s is not None]),
        "itl_s": Quantiles.of([g for r in ok for g in r.itl_token]),
        "itl_chunk_s": Quantiles.of([g for r in ok for g in r.gaps]),
        "tpot_s": Quantiles.of([t for r in ok if (t := r.tpot_s) is not None]),
        "e2e_s": Quantiles.of([r.e2e_s for r in ok]),
    }


def _client(ok: list[RequestResult], client: dict[str, Any] | None, latency: dict[str, Quantiles]) -> Any:
    if client is None:
        return None
    sends = Quantiles.of([r.send_delay_s for r in ok if r.send_delay_s is not None])
    client = client | {f"send_delay_{q}_s": getattr(sends, q) for q in QUANTILES}
    return client | {"affected": affected({k: dataclasses.asdict(v) for k, v in latency.items()}, client)}


def _per(count: float | None, over: float) -> float | None:
    """``count / over``; None when either is missing or zero time (never a division by zero)."""
    return count / over if over and count is not None else None


def _tokenizer_vs_usage(ok: list[RequestResult]) -> float | None:
    """The tokenizer's count over the server's usage, where both counted a request's tokens."""
    both = [r for r in ok if r.counted_tokens is not None and r.output_tokens]
    if not both:
        return None
    return sum(r.counted_tokens or 0 for r in both) / sum(r.output_tokens or 0 for r in both)


def _first_error(results: list[RequestResult]) -> str | None:
    failed = (r for r in results if not r.ok and r.detail and r.error != "cancelled")
    return next((f"{r.error}: {r.detail}" for r in failed), None)


def _output_tokens(ok: list[RequestResult]) -> int | None:
    """Every successful request's generated tokens, or None when some were not counted (chunks only)."""
    if not ok or any(r.output_tokens is None for r in ok):
        return None
    return sum(r.output_tokens or 0 for r in ok)


def summarize(
    results: list[RequestResult], wall_s: float, cfg: LoadConfig, client: dict[str, Any] | None = None
) -> LoadSummary:
    """The load's figures (``client``: what the client's watch saw, ClientWatch.report)."""
    from effmon.metrics.summary import evaluate_spans

    ok = [r for r in results if r.ok]
    tokens = _output_tokens(ok)
    chunks = sum(r.chunks for r in ok)
    errors = Counter(str(r.error) for r in results if not r.ok and r.error != "cancelled")
    cancelled = sum(r.error == "cancelled" for r in results)
    finished = len(results) - cancelled
    latency = _latency(ok)
    figures = evaluate_spans([], [request_row(r).values for r in results if r.error != "cancelled"], FIGURES)
    return LoadSummary(
        requests=len(results),
        succeeded=len(ok),
        failed=finished - len(ok),
        cancelled=cancelled,
        failure_share=_per(finished - len(ok), finished),
        max_failures=cfg.max_failures,
        errors=dict(errors),
        wall_s=wall_s,
        request_throughput=_per(len(ok), wall_s),
        output_token_throughput=_per(tokens, wall_s),
        output_tokens=tokens,
        chunks=chunks,
        chunk_throughput=_per(chunks, wall_s),
        tokens_counted_from=_tokens_counted_from(ok),
        tokenizer_vs_usage=_tokenizer_vs_usage(ok),
        latency=latency,
        itl_measured=_itl_measured(ok),
        goodput=_goodput(ok, cfg, wall_s, tokens is not None),
        client=_client(ok, client, latency),
        first_error=_first_error(results),
        figures={key: result.value for key, result in figures.items()},
    )


def request_row(r: RequestResult) -> Row:
    per_token = r.itl_token
    return Row(
        "request",
        {
            "t_start": r.t_start,
            "t_end": r.t_end,
            "requests": 1,
            "prompt_tokens": r.prompt_tokens,
            "generated_tokens": r.output_tokens if r.ok else None,
            "tokens_from": r.tokens_from if r.ok else None,
            "ttft_s": r.ttft_s,
            "tpot_s": r.tpot_s,
            "itl_mean_s": sum(r.gaps) / len(r.gaps) if r.gaps else None,
            "itl_token_mean_s": sum(per_token) / len(per_token) if per_token else None,
            "chunks": r.chunks,
            "error": r.error,
            "phase": None,
        },
    )


def saturation_warning(client: dict[str, Any]) -> str:
    """What to tell the user when the client, not the server, was the bottleneck."""
    cap = client.get("streams_capacity")
    lag, cpu = client.get("loop_lag_p99_s") or 0.0, client.get("cpu_share") or 0.0
    head = (
        f"the client was saturated for {client['saturated_share']:.0%} of the load (event-loop lag p99 "
        f"{lag * 1000:.0f} ms, CPU {cpu:.0%} of a core): latencies include the client's own delay and throughput "
        "is the client's ceiling, not the server's"
    )
    if client.get("limited_by") == "machine":
        return (
            head + "; its loop waited for a CPU that other processes held (this machine was busy), so how many "
            "streams it can drive is not known: run the load where it has a core to itself"
        )
    return (
        head
        + (f"; this machine drives about {cap} streams like these" if cap else "")
        + ": use fewer streams or a client machine apart from the server"
    )


def verdict(s: LoadSummary) -> str | None:
    """Why the load as a whole failed (None when it did not): no success, or more failures than allowed."""
    if s.succeeded == 0 and s.requests - s.cancelled > 0:
        return "no request succeeded"
    share = s.failure_share
    if share is not None and share > s.max_failures:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items()))
        return (
            f"{s.failed} of {s.failed + s.succeeded} requests failed ({share:.0%}, more than --max-failures "
            f"{s.max_failures:.0%}): {kinds}"
        )
    return None
