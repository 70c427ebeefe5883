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


async def _one(session: Any, cfg: LoadConfig, prompt: str) -> RequestResult:
    import aiohttp

    if cfg.endpoint == "chat":
        path = "/v1/chat/completions"
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
    else:
        path = "/v1/completions"
        body = {"prompt": prompt}
    body.update(
        model=cfg.model,
        max_tokens=cfg.output_tokens,
        stream=True,
        temperature=0,
        stream_options={"include_usage": True},
    )
    start_wall, start = time.time(), time.perf_counter()
    res = RequestResult(t_start=start_wall, t_end=start_wall)
    last_content: float | None = None
    finished = False
    try:
        async with session.post(cfg.url.rstrip("/") + path, json=body) as resp:
            if resp.status >= 400:
                res.error = f"http_{resp.status}"
                res.detail = (await resp.text())[:200]
                return res
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    finished = True
                    break
                now = time.perf_counter()
                if res.first_chunk_s is None:
                    res.first_chunk_s = now - start
                try:
                    chunk = json.loads(data)
                except ValueError:
                    res.error, res.detail = "bad_stream", data[:200].decode(errors="replace")
                    return res
                if res.response_id is None:
                    res.response_id = chunk.get("id")
                usage = chunk.get("usage")
                if usage:
                    if usage.get("completion_tokens") is not None:
                        res.output_tokens, res.tokens_from_usage = int(usage["completion_tokens"]), True
                    res.prompt_tokens = usage.get("prompt_tokens")
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") if cfg.endpoint == "chat" else choice.get("text")
                    if text:
                        if res.ttft_s is None:
                            res.ttft_s = now - start
                        elif last_content is not None:
                            res.gaps.append(now - last_content)
                        last_content = now
                        res.chunks += 1
                    if choice.get("finish_reason"):
                        finished = True
            if not finished:
                res.error = "cut_off"  # the stream ended before the server said it was done
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
