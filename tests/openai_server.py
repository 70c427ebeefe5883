"""A real OpenAI-compatible streaming server on 127.0.0.1 with known, injected delays.

    python -m tests.openai_server --port 8123 --ttft 0.05 --itl 0.02 [--fail-every 10] [--cut-every 7]

Like transformers serve, it sends a role-only chunk first (before any text), then one chunk a token,
then a last chunk with finish_reason and usage. --ttft is the delay to the first content chunk, --itl
the delay between content chunks; 0 for both streams as fast as it can (the load generator's ceiling).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web


def make_app(ttft: float, itl: float, fail_every: int = 0, cut_every: int = 0) -> web.Application:
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
        tokens = int(body.get("max_tokens") or 16)
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
        for i in range(tokens):
            target = start + ttft + i * itl
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if cut_every and n % cut_every == 0 and i == tokens // 2:
                return resp  # the stream stops without a finish_reason: a cut-off request
            text = f" t{i}"
            if i == 0:
                served[f"r{n}"] = {"received": received, "first_content": time.time()}
            await resp.write(event({"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}))
        usage = {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens}
        await resp.write(
            event(
                {"index": 0, "delta": {}, "finish_reason": "length"}
                if chat
                else {"index": 0, "text": "", "finish_reason": "length"},
                usage,
            )
        )
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(served)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ttft", type=float, default=0.05)
    ap.add_argument("--itl", type=float, default=0.02)
    ap.add_argument("--fail-every", type=int, default=0)
    ap.add_argument("--cut-every", type=int, default=0)
    a = ap.parse_args()
    web.run_app(
        make_app(a.ttft, a.itl, a.fail_every, a.cut_every),
        host="127.0.0.1",
        port=a.port,
        print=lambda *_: print("ready", flush=True),
        access_log=None,
    )


if __name__ == "__main__":
    main()
