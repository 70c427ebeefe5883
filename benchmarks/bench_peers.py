"""effmon load beside its peers, against one server whose timing is known by construction.

    python benchmarks/bench_peers.py [--streams 1,16,128,512] [--aiperf PATH] [--guidellm PATH] [--vllm PATH]

The server (tests/openai_server.py) sends the first token 200 ms after a request, then a token every 20 ms, 32
tokens, two or three tokens a chunk after the first, and usage in its last chunk; it records, per response,
when the request arrived and when its first and last content left: the truth each tool is set against. Each
tool runs as a user runs it (its own command, its own process), with the same local tokenizer folder (the
server's words t0 … t4095 are one token each), at each number of streams, then once against a server that
streams instantly (the request ceiling). Printed: per tool and streams, TTFT / ITL / TPOT / E2E p50 and p99,
output tokens counted, start-up time (launch to the first request at the server) and wall time; and the
ceiling in requests/s. A peer that is not installed or fails gets its row with the reason.

Peers (each in its own virtual environment is best; pass the command's path):
  AIPerf:    pip install aiperf      (aiperf profile)
  GuideLLM:  pip install guidellm    (guidellm run)
  vLLM:      pip install vllm        (vllm bench serve; 5.8 GB, optional)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TTFT_S, ITL_S, TOKENS = 0.2, 0.02, 32
PROMPT_TOKENS = 64


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * len(v) + 0.5) - 1))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, ttft: float, itl: float, per_chunk: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.openai_server", "--port", str(self.port), "--ttft", str(ttft), "--itl",
             str(itl), "--tokens-per-chunk", per_chunk],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(200):
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the test server did not start")

    def stats(self) -> dict[str, dict[str, float]]:
        with urllib.request.urlopen(self.url + "/stats", timeout=30) as resp:
            return dict(json.loads(resp.read()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def make_tokenizer(folder: Path) -> Path:
    """A Hugging Face tokenizer folder in which each of the server's words is one token (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = "time energy token model layer memory power batch cache prompt answer server request stream".split()
    vocab = {f"t{i}": i for i in range(4096)}
    for w in [*words, "latency", "decode", "prefill", "kernel", "tensor", "weight", "[UNK]", "<s>", "</s>"]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "unk_token": "[UNK]",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "model_max_length": 4096,
            }
        )  # fmt: skip
    )
    return folder


# -- the tools: a command, and how to read what it wrote -----------------------------------------------------
def effmon_cmd(url: str, streams: int, n: int, tok: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "effmon", "load", url, "--model", "m", "--concurrency", str(streams), "--requests",
            str(n), "--output-tokens", str(TOKENS), "--prompt-tokens", str(PROMPT_TOKENS), "--tokenizer", str(tok),
            "--json", str(out / "s.json"), "-q"]  # fmt: skip


def effmon_read(out: Path) -> dict[str, Any]:
    s = json.loads((out / "s.json").read_text())
    row = {f"{k}_{q}": (s[f"{k}_s"][q] * 1000 if s[f"{k}_s"][q] is not None else None)
           for k in ("ttft", "itl", "tpot", "e2e") for q in ("p50", "p99")}  # fmt: skip
    client = s.get("client") or {}
    note = "ITL per token; " + ("client saturated (said so)" if client.get("saturated") else "client not saturated")
    return row | {"tokens": s["output_tokens"], "requests": s["succeeded"], "rps": s["request_throughput"],
                  "note": note}  # fmt: skip


def aiperf_cmd(exe: str) -> Callable[[str, int, int, Path, Path], list[str]]:
    def cmd(url: str, streams: int, n: int, tok: Path, out: Path) -> list[str]:
        return [exe, "profile", "--model", "m", "--url", url, "--endpoint-type", "chat", "--streaming",
                "--concurrency", str(streams), "--request-count", str(n), "--tokenizer", str(tok),
                "--synthetic-input-tokens-mean", str(PROMPT_TOKENS), "--output-tokens-mean", str(TOKENS),
                "--artifact-dir", str(out / "a"), "--ui-type", "none"]  # fmt: skip

    return cmd


def aiperf_read(out: Path) -> dict[str, Any]:
    d = json.loads((out / "a" / "profile_export_aiperf.json").read_text())
    itl = d.get("inter_token_latency") or {}
    row = {
        "ttft_p50": d["time_to_first_token"]["p50"], "ttft_p99": d["time_to_first_token"]["p99"],
        "itl_p50": itl.get("p50"), "itl_p99": itl.get("p99"),
        "tpot_p50": itl.get("p50"), "tpot_p99": itl.get("p99"),  # its ITL is (E2E - TTFT) / (tokens - 1) a request
        "e2e_p50": d["request_latency"]["p50"], "e2e_p99": d["request_latency"]["p99"],
    }  # fmt: skip
    count = d.get("output_token_count") or {}
    return row | {"tokens": count.get("sum"), "requests": (d.get("request_count") or {}).get("avg"),
                  "rps": (d.get("request_throughput") or {}).get("avg"),
                  "note": "ITL = TPOT a request (re-tokenised text)"}  # fmt: skip


def guidellm_cmd(exe: str) -> Callable[[str, int, int, Path, Path], list[str]]:
    def cmd(url: str, streams: int, n: int, tok: Path, out: Path) -> list[str]:
        return [exe, "run", "--backend", f"kind=openai_http,target={url},model=m",
                "--profile", f"kind=concurrent,streams={streams}", "--constraint", f"kind=max_requests,count={n}",
                "--data", f"kind=synthetic_text,prompt_tokens={PROMPT_TOKENS},output_tokens={TOKENS}",
                "--tokenizer", f"kind=huggingface_auto,model={tok}", "--output", f"kind=json,path={out / 'g.json'}",
                "--disable-progress"]  # fmt: skip

    return cmd


def guidellm_read(out: Path) -> dict[str, Any]:
    m = json.loads((out / "g.json").read_text())["benchmarks"][0]["metrics"]

    def q(key: str, p: str, scale: float = 1.0) -> float | None:
        v = m[key]["successful"]["percentiles"].get(p)
        return None if v is None else v * scale

    keys = (("ttft", "time_to_first_token_ms", 1.0), ("itl", "inter_token_latency_ms", 1.0),
            ("tpot", "time_per_output_token_ms", 1.0), ("e2e", "request_latency", 1000.0))  # fmt: skip
    row = {f"{name}_{p}": q(key, p, scale) for name, key, scale in keys for p in ("p50", "p99")}
    ok = m["output_token_count"]["successful"]
    rps = m["requests_per_second"]["successful"].get("mean")
    return row | {"tokens": ok.get("total_sum"), "requests": ok.get("count"), "rps": rps,
                  "note": "ITL = TPOT a request"}  # fmt: skip


def vllm_cmd(exe: str) -> Callable[[str, int, int, Path, Path], list[str]]:
    def cmd(url: str, streams: int, n: int, tok: Path, out: Path) -> list[str]:
        return [exe, "bench", "serve", "--backend", "openai-chat", "--base-url", url, "--endpoint",
                "/v1/chat/completions", "--model", "m", "--tokenizer", str(tok), "--dataset-name", "random",
                "--random-input-len", str(PROMPT_TOKENS), "--random-output-len", str(TOKENS), "--num-prompts", str(n),
                "--max-concurrency", str(streams), "--save-result", "--result-dir", str(out),
                "--result-filename", "v.json"]  # fmt: skip

    return cmd


def vllm_read(out: Path) -> dict[str, Any]:
    d = json.loads((out / "v.json").read_text())
    row = {f"{k}_{p}": d.get(f"{p}_{k}_ms" if p != "p50" else f"median_{k}_ms") for k in ("ttft", "itl", "tpot")
           for p in ("p50", "p99")}  # fmt: skip
    row |= {"e2e_p50": d.get("median_e2el_ms"), "e2e_p99": d.get("p99_e2el_ms")}
    return row | {"tokens": d.get("total_output_tokens"), "requests": d.get("completed"),
                  "rps": d.get("request_throughput"), "note": "ITL per chunk"}  # fmt: skip


def truth(stats: dict[str, dict[str, float]]) -> dict[str, Any]:
    done = [x for x in stats.values() if "last_content" in x]
    ttft = [(x["first_content"] - x["received"]) * 1000 for x in done]
    e2e = [(x["last_content"] - x["received"]) * 1000 for x in done]
    return {"ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99), "itl_p50": ITL_S * 1000, "itl_p99": ITL_S * 1000,
            "tpot_p50": ITL_S * 1000, "tpot_p99": ITL_S * 1000, "e2e_p50": pct(e2e, 50), "e2e_p99": pct(e2e, 99),
            "tokens": sum(int(x["tokens"]) for x in done), "requests": len(done),
            "note": "server's own clock (TTFT, E2E); injected (ITL, TPOT)"}  # fmt: skip


def run_tool(name: str, cmd: list[str], read: Callable[[Path], dict[str, Any]], server: Server, out: Path,
             timeout: float) -> dict[str, Any]:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    # AIPerf 0.13 cannot load a local tokenizer folder under HF_HUB_OFFLINE=1 (it asks the hub cache for the path)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env |= {"EFFMON_HOME": str(out / "home"), "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(ROOT)}
    launched = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"tool": name, "note": f"did not finish within {timeout:.0f} s"}
    wall = time.time() - launched
    stats = server.stats()
    first = min((x["received"] for x in stats.values()), default=None)
    base = {"tool": name, "startup_s": first - launched if first else None, "wall_s": wall}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return base | {"note": f"failed (exit {proc.returncode}): {tail[0][:120]}"}
    try:
        return base | read(out) | {"truth": truth(stats)}
    except (OSError, KeyError, ValueError, IndexError, TypeError) as exc:
        return base | {"note": f"its output could not be read: {type(exc).__name__}: {exc}"}


def fmt(a: Any, b: Any) -> str:
    return "–" if a is None else f"{a:.1f}/{b:.1f}" if b is not None else f"{a:.1f}/–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,16,128,512")
    ap.add_argument("--aiperf", default=shutil.which("aiperf"))
    ap.add_argument("--guidellm", default=shutil.which("guidellm"))
    ap.add_argument("--vllm", default=shutil.which("vllm"))
    ap.add_argument("--ceiling-streams", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run that checks the script works (the e2e tests run it); its figures mean nothing",
    )
    a = ap.parse_args()
    if a.quick:
        a.streams, a.ceiling_streams, a.timeout = "1", 4, 120
    tools: list[tuple[str, Any, Callable[[Path], dict[str, Any]], str]] = [
        ("effmon load", effmon_cmd, effmon_read, ""),
        ("AIPerf", aiperf_cmd(a.aiperf) if a.aiperf else None, aiperf_read, "not installed: pip install aiperf"),
        ("GuideLLM", guidellm_cmd(a.guidellm) if a.guidellm else None, guidellm_read,
         "not installed: pip install guidellm"),
        ("vllm bench serve", vllm_cmd(a.vllm) if a.vllm else None, vllm_read,
         "not installed (a 5.8 GB install; optional): pip install vllm"),
    ]  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="effmon-peers-"))
    tok = make_tokenizer(work / "tokenizer")
    print(f"server: first token {TTFT_S * 1000:.0f} ms, a token every {ITL_S * 1000:.0f} ms, {TOKENS} tokens, 2-3 "
          f"tokens a chunk, usage sent; cpu cores: {os.cpu_count()}; python {sys.version.split()[0]}\n")  # fmt: skip
    print("| streams | tool | TTFT p50/p99 ms | ITL p50/p99 ms | TPOT p50/p99 ms | E2E p50/p99 ms | tokens "
          "(truth) | start-up s | wall s | note |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for streams in map(int, a.streams.split(",")):
        n = max(16, 4 * streams)
        shown_truth = False
        for name, cmd, read, missing in tools:
            if cmd is None:
                print(f"| {streams} | {name} | | | | | | | | {missing} |", flush=True)
                continue
            server = Server(TTFT_S, ITL_S, "2-3")
            try:
                r = run_tool(name, cmd(server.url, streams, n, tok, work / f"{name[:6]}-{streams}"), read, server,
                             work / f"{name[:6]}-{streams}", a.timeout)  # fmt: skip
            finally:
                server.stop()
            t = r.get("truth")
            if t and not shown_truth:
                print(f"| {streams} | **truth** | {fmt(t['ttft_p50'], t['ttft_p99'])} | "
                      f"{fmt(t['itl_p50'], t['itl_p99'])} | {fmt(t['tpot_p50'], t['tpot_p99'])} | "
                      f"{fmt(t['e2e_p50'], t['e2e_p99'])} | {t['tokens']} | | | {t['note']} |")  # fmt: skip
                shown_truth = True
            tokens = "–" if "tokens" not in r else ("not counted" if r["tokens"] is None else f"{r['tokens']:.0f}")
            if t and r.get("tokens") is not None:
                tokens += f" ({t['tokens']})"
            startup = "–" if r.get("startup_s") is None else f"{r['startup_s']:.2f}"
            print(f"| {streams} | {name} | {fmt(r.get('ttft_p50'), r.get('ttft_p99'))} | "
                  f"{fmt(r.get('itl_p50'), r.get('itl_p99'))} | {fmt(r.get('tpot_p50'), r.get('tpot_p99'))} | "
                  f"{fmt(r.get('e2e_p50'), r.get('e2e_p99'))} | {tokens} | {startup} | {r.get('wall_s', 0):.1f} | "
                  f"{r.get('note', '')} |", flush=True)  # fmt: skip
    print(f"\nrequest ceiling: a server that streams at once (32 tokens, one a chunk), {a.ceiling_streams} streams, "
          f"{8 * a.ceiling_streams} requests\n\n| tool | requests/s | wall s | note |\n|---|---|---|---|")  # fmt: skip
    for name, cmd, read, missing in tools:
        if cmd is None:
            print(f"| {name} | | | {missing} |")
            continue
        server = Server(0.0, 0.0, "1")
        try:
            out = work / f"{name[:6]}-ceiling"
            r = run_tool(name, cmd(server.url, a.ceiling_streams, 8 * a.ceiling_streams, tok, out), read, server, out,
                         a.timeout)  # fmt: skip
        finally:
            server.stop()
        rps = "–" if r.get("rps") is None else f"{r['rps']:.0f}"
        print(f"| {name} | {rps} | {r.get('wall_s', 0):.1f} | {r.get('note', '')} |", flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
