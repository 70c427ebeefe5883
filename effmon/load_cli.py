"""``effmon load``: run the load generator while recording this machine, then print the figures."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from effmon.declare import Row
from effmon.load import LoadConfig, RequestResult, parse_slo, run_load, summarize


def _prompts(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--prompts {path}: no such file")
    prompts = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise ValueError(f'{path}:{lineno}: not JSON; one {{"prompt": ...}} object a line') from None
        text = obj.get("prompt") or obj.get("text") if isinstance(obj, dict) else None
        if not text:
            raise ValueError(f"{path}:{lineno}: no 'prompt' or 'text' field")
        prompts.append(str(text))
    if not prompts:
        raise ValueError(f"--prompts {path}: the file holds no prompts")
    return prompts


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


def cmd_load(args: Any) -> int:
    from effmon.recorder import BackgroundRecording, RecordOptions

    try:
        slo_ttft, slo_tpot = parse_slo(args.slo) if args.slo else (None, None)
        prompts = _prompts(args.prompts) if args.prompts else None
    except ValueError as exc:
        print(f"effmon: error: {exc}", file=sys.stderr)
        return 2
    if not args.url.startswith(("http://", "https://")):
        print(f"effmon: error: {args.url!r} is not an http(s) URL; e.g. http://127.0.0.1:8000", file=sys.stderr)
        return 2
    concurrency = args.concurrency if args.concurrency is not None else (args.max_concurrency if args.rate else 8)
    cfg = LoadConfig(
        url=args.url,
        model=args.model,
        endpoint=args.endpoint,
        concurrency=concurrency,
        rate=args.rate,
        duration=args.duration,
        requests=args.requests if args.requests is not None else (None if args.duration else 100),
        prompt_tokens=args.prompt_tokens,
        output_tokens=args.output_tokens,
        prompts=prompts,
        slo_ttft_s=slo_ttft,
        slo_tpot_s=slo_tpot,
        timeout_s=args.timeout,
    )
    rec = BackgroundRecording(RecordOptions(name=args.name, quiet=True), slug="load")
    rec.recorder.extra_meta.update(
        command=["effmon", "load", args.url],
        run_kind="inference",
        load={k: v for k, v in vars(cfg).items() if k != "prompts"},
    )
    path = rec.start()
    if not args.quiet:
        how = f"rate {cfg.rate}/s" if cfg.rate else f"concurrency {cfg.concurrency}"
        until = f"{cfg.duration:g} s" if cfg.duration else f"{cfg.requests} requests"
        print(f"effmon load: {args.url} ({args.endpoint}), {how}, {until}; recording {path.stem}", file=sys.stderr)
    status = "complete"
    try:
        results, wall = asyncio.run(run_load(cfg, on_result=lambda r: rec.recorder.sink([request_row(r)])))
    except KeyboardInterrupt:
        status, results, wall = "interrupted", [], 0.0
    summary = summarize(results, wall, cfg)
    if rec.recorder.writer is not None:
        rec.recorder.writer.set_meta(load_summary=summary)
    rec.stop(status, "the load ended")
    _print(summary, args)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if summary["succeeded"] == 0:
        hint = summary["first_error"] or ", ".join(summary["errors"])
        print(
            f"effmon: error: no request succeeded ({hint}). Is {args.url} an OpenAI-compatible server? "
            f"Try --endpoint {'completions' if args.endpoint == 'chat' else 'chat'} or check --model.",
            file=sys.stderr,
        )
        return 1
    return 0


def _print(s: dict[str, Any], args: Any = None) -> None:
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
