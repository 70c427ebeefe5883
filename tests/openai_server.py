"""A real OpenAI-compatible streaming server on 127.0.0.1 with known, injected delays.

    python -m tests.openai_server --port 8123 --ttft 0.05 --itl 0.02 [--fail-every 10] [--cut-every 7]
        [--tokens-per-chunk 2-3] [--no-usage] [--done] [--tokenize]

Like transformers serve, it sends a role-only chunk first (before any text), then the tokens, then a last
chunk with finish_reason and usage. Token i is ready at --ttft + i × --itl after the request; a chunk is
sent when its last token is ready. The first content chunk carries one token (as vLLM's does), later ones
--tokens-per-chunk (a number, or A-B drawn per chunk). Each token is the word " t<i>" (tests give a
tokenizer that knows these words). --no-usage leaves usage out, --done ends the stream with ``data: [DONE]``,
--tokenize serves vLLM's ``POST /tokenize``. 0 for --ttft and --itl streams as fast as it can (the load
generator's ceiling). ``GET /stats`` says what was served: per response id, when it was received, when its
first and last content left, the tokens and the chunks; ``GET /lag`` its own event loop's lag (p50, p90).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web


def chunk_sizes(tokens: int, per_chunk: str, seed: int) -> list[int]:
    """How many tokens each content chunk carries: one first, then ``per_chunk`` (N or A-B)."""
    import random

    lo, _, hi = per_chunk.partition("-")
    rng, sizes, left = random.Random(seed), [1], tokens - 1
    while left > 0:
        n = min(left, rng.randint(int(lo), int(hi or lo)))
        sizes.append(n)
        left -= n
    return sizes if tokens > 0 else []


def make_app(
    ttft: float,
    itl: float,
    fail_every: int = 0,
    cut_every: int = 0,
    per_chunk: str = "1",
    usage: bool = True,
    done: bool = False,
    tokenize: bool = False,
) -> web.Application:
    count = {"n": 0}
    served: dict[str, dict[str, float]] = {}  # what the server actually did, for checking clients

    async def completions(request: web.Request) -> web.StreamResponse:
        received = time.time()
        body = await request.json()
        count["n"] += 1
        n = count["n"]
        if fail_every and n % fail_every == 0:
            return web.json_response({"error": "injected failure"}, status=500)
        chat = request.path.endswith("chat/completions")
        tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        created = int(time.time())

        def event(choice: dict, usage: dict | None = None) -> bytes:
            obj = {
                "id": f"r{n}",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created,
                "model": body.get("model"),
                "choices": [choice],
            }
            if usage:
                obj["usage"] = usage
            return f"data: {json.dumps(obj)}\n\n".encode()

        if chat:
            await resp.write(event({"index": 0, "delta": {"role": "assistant"}}))
        start = time.perf_counter()
        sizes = chunk_sizes(tokens, per_chunk, n)
        sent = 0
        for k, size in enumerate(sizes):
            last = sent + size - 1  # the chunk leaves when its last token is ready
            delay = start + ttft + last * itl - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if cut_every and n % cut_every == 0 and k == len(sizes) // 2:
                return resp  # the stream stops without a finish_reason: a cut-off request
            text = "".join(f" t{i}" for i in range(sent, sent + size))
            if k == 0:
                served[f"r{n}"] = {"received": received, "first_content": time.time()}
            await resp.write(event({"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}))
            sent += size
        served[f"r{n}"] |= {"tokens": sent, "chunks": len(sizes), "last_content": time.time()}
        counts = {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens}
        await resp.write(
            event(
                {"index": 0, "delta": {}, "finish_reason": "length"}
                if chat
                else {"index": 0, "text": "", "finish_reason": "length"},
                counts if usage else None,
            )
        )
        if done:
            await resp.write(b"data: [DONE]\n\n")
        return resp

    async def tokenize_text(request: web.Request) -> web.Response:
        body = await request.json()
        words = str(body.get("prompt") or "").split()
        return web.json_response({"count": len(words), "max_model_len": 4096, "tokens": list(range(len(words)))})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(served)

    lags: list[float] = []

    async def watch_loop(app: web.Application) -> None:
        """The server's own event-loop lag (how late a 10 ms sleep wakes): on a busy machine its time stamps run
        late by about this much, and a test that checks a client against them allows for it."""

        async def watch() -> None:
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(max(0.0, time.perf_counter() - t - 0.01))
                del lags[:-5000]

        app["watch"] = asyncio.create_task(watch())

    async def lag(request: web.Request) -> web.Response:
        ordered = sorted(lags) or [0.0]
        return web.json_response({f"p{q}": ordered[min(len(ordered) - 1, len(ordered) * q // 100)] for q in (50, 90)})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    app.router.add_get("/lag", lag)
    app.on_startup.append(watch_loop)
    if tokenize:
        app.router.add_post("/tokenize", tokenize_text)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ttft", type=float, default=0.05)
    ap.add_argument("--itl", type=float, default=0.02)
    ap.add_argument("--fail-every", type=int, default=0)
    ap.add_argument("--cut-every", type=int, default=0)
    ap.add_argument("--tokens-per-chunk", default="1")
    ap.add_argument("--no-usage", action="store_true")
    ap.add_argument("--done", action="store_true")
    ap.add_argument("--tokenize", action="store_true")
    a = ap.parse_args()
    web.run_app(
        make_app(a.ttft, a.itl, a.fail_every, a.cut_every, a.tokens_per_chunk, not a.no_usage, a.done, a.tokenize),
        host="127.0.0.1",
        port=a.port,
        print=lambda *_: print("ready", flush=True),
        access_log=None,
    )


if __name__ == "__main__":
    main()
