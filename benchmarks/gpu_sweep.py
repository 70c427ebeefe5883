"""On a GPU machine: a real energy sweep (issue 18) with real NVML readings, never touching a GPU setting.

    python benchmarks/gpu_sweep.py [--url http://127.0.0.1:8000 --model NAME] [--quick]

Without --url it serves a randomly initialised 1.2B-parameter Llama-shaped model (bf16, built from a config: no
download) on the GPU with a small OpenAI-compatible streaming server in this process (aiohttp; requests are
generated one token step at a time with a KV cache, several in flight interleaved), then runs

    effmon sweep URL --input 128,512,2048 --output 64,256 --concurrency 1,4,16 --idle 20 -o gpu_sweep.csv

and prints the cells. With --url it sweeps your server instead (vLLM, transformers serve ...). effmon reads the
clocks and power limit the GPU has and never sets them unless --sm-clocks is given (passed to effmon sweep: root,
restored on every exit; never on a GPU others are using). The figures go into docs/benchmarks.md with the GPU's
name and driver.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def serve_model(port: int, ready: threading.Event, device: str = "cuda") -> None:
    """A random Llama on the GPU behind /v1/chat/completions (streamed, usage in the last chunk); ``device="cpu"``
    serves a small one, to check this script itself on a CPU machine."""
    import torch
    from aiohttp import web
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    size = (dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=20, num_attention_heads=16)
            if device == "cuda" else dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=4))  # fmt: skip
    config = LlamaConfig(**size, vocab_size=32000, max_position_embeddings=4096)
    model = LlamaForCausalLM(config).to(device, torch.bfloat16 if device == "cuda" else torch.float32).eval()
    lock = asyncio.Lock()  # one forward at a time; requests interleave token by token

    def ids_of(text: str) -> list[int]:
        return [hash(w) % (config.vocab_size - 2) + 2 for w in text.split()] or [1]

    @torch.inference_mode()
    def step(ids: torch.Tensor, past: object) -> tuple[int, object]:
        out = model(input_ids=ids, past_key_values=past, use_cache=True)
        return int(out.logits[0, -1].argmax()), out.past_key_values

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        tokens = int(body.get("max_tokens") or 16)
        ids = ids_of(prompt)[:3000]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        def event(delta: dict, **extra: object) -> bytes:
            obj = {"id": "x", "object": "chat.completion.chunk", "model": body.get("model"),
                   "choices": [{"index": 0, "delta": delta, **extra}]}  # fmt: skip
            return f"data: {json.dumps(obj)}\n\n".encode()

        await resp.write(event({"role": "assistant"}))
        loop = asyncio.get_running_loop()
        past, nxt = None, torch.tensor([ids], device=device)
        for _ in range(tokens):
            async with lock:
                token, past = await loop.run_in_executor(None, step, nxt, past)
            nxt = torch.tensor([[token]], device=device)
            await resp.write(event({"content": f" w{token}"}))
        usage = {"prompt_tokens": len(ids), "completion_tokens": tokens, "total_tokens": len(ids) + tokens}
        obj = {"id": "x", "object": "chat.completion.chunk", "model": body.get("model"),
               "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "usage": usage}  # fmt: skip
        await resp.write(f"data: {json.dumps(obj)}\n\ndata: [DONE]\n\n".encode())
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "random-llama-1.2b", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/health", health)

    async def run() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="sweep this server instead of the built-in one")
    ap.add_argument("--model", help="with --url: the model name (default: the one it lists)")
    ap.add_argument("--quick", action="store_true", help="a 2 x 2 x 2 grid, 8 requests a round (about 5 min)")
    ap.add_argument("--sm-clocks", metavar="MHZ,MHZ", help="lock the SM clock per cell (root; only when given)")
    ap.add_argument("-o", default="gpu_sweep.csv")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: check this script on a CPU machine
    args = ap.parse_args()
    gpu, driver = "no GPU (--device cpu: a check of this script)", "none"
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        gpu = pynvml.nvmlDeviceGetName(handle)
        driver = pynvml.nvmlSystemGetDriverVersion()
    except Exception as exc:  # no driver: this script is for a GPU machine
        if args.device == "cuda":
            why = f"needs an NVIDIA GPU and driver (pynvml: {exc}); on a CPU machine see tests/e2e/test_sweep.py"
            raise SystemExit(why) from None
    url = args.url
    if url is None:
        port = 8765
        ready = threading.Event()
        threading.Thread(target=serve_model, args=(port, ready, args.device), daemon=True).start()
        if not ready.wait(600):
            raise SystemExit("the built-in server did not start")
        url = f"http://127.0.0.1:{port}"
    grid = (["--input", "128,1024", "--output", "32,128", "--concurrency", "1,8", "--requests", "8", "--idle", "10"]
            if args.quick else
            ["--input", "128,512,2048", "--output", "64,256", "--concurrency", "1,4,16", "--idle", "20"])  # fmt: skip
    cmd = [sys.executable, "-m", "effmon", "sweep", url, *grid, "-o", args.o]
    if args.model:
        cmd += ["--model", args.model]
    if args.sm_clocks:
        cmd += ["--sm-clocks", args.sm_clocks]
    print(f"{gpu}, driver {driver}: {' '.join(cmd)}", file=sys.stderr)
    started = time.time()
    env = {**os.environ, "COLUMNS": "160"}
    code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    print(f"sweep took {time.time() - started:.0f} s (exit {code}); cells in {args.o}; "
          "charts: effmon report last --format html -o gpu_sweep.html", file=sys.stderr)  # fmt: skip
    raise SystemExit(code)


if __name__ == "__main__":
    main()
