"""Commands that serve and load: ``serve`` (a server from a preset) and ``load`` (drive any server)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from effmon.cli.common import Handler, add_prometheus_option, err, formatter, interactive, positive, share, views


def register(sub: Any) -> dict[str, Handler]:
    srv = sub.add_parser(
        "serve",
        help="start an inference server from a preset (vLLM, transformers serve), watch it, optionally load it",
        description="Start a server from a preset, wait until it is healthy (showing its log), record it with this "
        "machine's GPUs, and show the dashboard (or, with --load, drive it with the load generator and print the "
        "figures). Ctrl-C stops the load, then the server (SIGTERM, then SIGKILL), then saves the session.",
        epilog="examples:\n  effmon serve tiny-cpu --load --requests 50\n"
        "  effmon serve qwen2.5-7b-awq --set port=8001\n"
        "  effmon serve llama3.1-8b-fp8 --load --rate 4 --duration 120 --slo ttft=200ms,tpot=50ms\n"
        "  effmon presets show qwen2.5-7b-gptq-int4      # the exact command",
        formatter_class=formatter(),
    )
    srv.add_argument("preset", help="a serving preset (see `effmon presets`) or a .toml file")
    srv.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    srv.add_argument(
        "--timeout",
        type=positive,
        default=600.0,
        metavar="S",
        help="how long to wait for the server to become healthy (default: 600 s)",
    )
    srv.add_argument("--headless", action="store_true", help="no dashboard: serve until Ctrl-C")
    add_prometheus_option(srv)
    srv.add_argument(
        "--detach",
        action="store_true",
        help="serve in the background, without a terminal (survives an SSH drop); prints the session name: watch "
        "it with effmon replay NAME, stop the server with effmon stop NAME",
    )
    srv.add_argument("--load", action="store_true", help="drive the server with the load generator, then stop it")
    srv.add_argument("--concurrency", type=int, default=None, help="--load: requests in flight (default 8)")
    srv.add_argument("--rate", type=positive, help="--load: Poisson arrivals per second")
    srv.add_argument("--requests", type=int, help="--load: number of requests (default 100)")
    srv.add_argument("--duration", type=positive, help="--load: seconds of load")
    srv.add_argument("--prompt-tokens", type=int, default=64)
    srv.add_argument("--output-tokens", type=int, default=64)
    srv.add_argument("--slo", help="--load: goodput SLO, e.g. ttft=200ms,tpot=50ms")
    srv.add_argument("--name", help="session name")
    srv.add_argument("-q", "--quiet", action="store_true", help="print only errors")

    ld = sub.add_parser(
        "load",
        help="drive an OpenAI-compatible server with streamed requests; TTFT, ITL, TPOT, E2E, throughput, goodput",
        description="Load an OpenAI-compatible server (vLLM, transformers serve, SGLang, TGI, llama.cpp) and "
        "measure on the client side. TTFT is timed to the first chunk that carries generated text. Tokens come "
        "from the server's usage when it sends them, else from the model's tokenizer (--tokenizer) or the "
        "server's /tokenize; without either they are not counted (chunks are not tokens) and per-token figures "
        "say N/A. ITL is given per token (where the tokens of each chunk are known) and per chunk. The client "
        "watches its own event loop and CPU and says when it, not the server, was the bottleneck. Failed and "
        "cut-off requests are counted apart and never enter the latency figures. The run is recorded as a "
        "session (with this machine's GPUs), so `effmon report` gives IT, AL per request and joules per token.",
        epilog="examples:\n  effmon load http://127.0.0.1:8000 --model my-model --concurrency 16 --requests 200\n"
        "  effmon load http://127.0.0.1:8000 --rate 4 --duration 60 --slo ttft=200ms,tpot=50ms\n"
        "  effmon load http://127.0.0.1:8000 --prompts prompts.jsonl --output-tokens 128\n"
        "  effmon load http://127.0.0.1:8000 --tokenizer ~/models/llama-3.1-8b   # a server that sends no usage",
        formatter_class=formatter(),
    )
    ld.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    ld.add_argument(
        "--model", help="model name sent with each request (default: the one the server is pinned to or lists)"
    )
    ld.add_argument("--endpoint", choices=["chat", "completions"], default="chat")
    mode = ld.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, default=None, help="requests in flight (closed loop; default 8)")
    mode.add_argument("--rate", type=positive, help="Poisson arrivals per second (open loop)")
    ld.add_argument("--max-concurrency", type=int, default=0, help="with --rate: cap on requests in flight")
    stop_group = ld.add_mutually_exclusive_group()
    stop_group.add_argument("--requests", type=int, help="send this many requests (default: 100)")
    stop_group.add_argument("--duration", type=positive, help="send requests for this many seconds")
    ld.add_argument("--prompt-tokens", type=int, default=64, help="length of random prompts, in words (~tokens)")
    ld.add_argument("--output-tokens", type=int, default=64, help="max_tokens of each request")
    ld.add_argument("--prompts", help='a JSONL file of prompts ({"prompt": ...} or {"text": ...} a line)')
    ld.add_argument("--slo", help="goodput SLO, e.g. ttft=200ms,tpot=50ms (TPOT per token)")
    ld.add_argument(
        "--tokenizer",
        metavar="MODEL_DIR",
        help="count tokens with this local model folder's tokenizer.json (or the file): tokens where the server "
        "sends no usage, and tokens per chunk for ITL per token; 'server' for its /tokenize only; 'none' to count "
        "none (default: the server's /tokenize where it has one)",
    )
    ld.add_argument("--timeout", type=positive, default=120.0, help="per-request timeout in s (default: 120)")
    ld.add_argument(
        "--max-failures",
        type=share,
        default=0.1,
        metavar="SHARE",
        help="exit 1 when more than this share of requests fail, e.g. 0.05 or 5%% (default: 10%%)",
    )
    ld.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="the summary as JSON: on standard output instead of the table, or into FILE beside the table",
    )
    ld.add_argument(
        "--force", action="store_true", help="with --json FILE: also write through a symbolic link or into a device"
    )
    ld.add_argument("--name", help="session name")
    ld.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    return {"serve": cmd_serve, "load": cmd_load}


def cmd_serve(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.presets import PresetError, load
    from effmon.recording import EXIT_USAGE, RecordError, RecordOptions
    from effmon.serving.load import LoadConfig, parse_slo
    from effmon.serving.serve import serve

    try:
        preset = load(args.preset, args.set)
        slo = parse_slo(args.slo) if args.slo else (None, None)
    except (PresetError, ValueError) as exc:
        raise RecordError(str(exc), EXIT_USAGE) from None
    cfg = None
    if args.load:
        cfg = LoadConfig(
            url="",
            concurrency=args.concurrency or 8,
            rate=args.rate,
            duration=args.duration,
            requests=args.requests if args.requests is not None else (None if args.duration else 100),
            prompt_tokens=args.prompt_tokens,
            output_tokens=args.output_tokens,
            slo_ttft_s=slo[0],
            slo_tpot_s=slo[1],
        )
    from effmon.cli.control import announce, detach, detached, relaunch_args

    if args.detach:
        if args.load:
            raise RecordError("--detach serves until effmon stop; load it with effmon load URL", EXIT_USAGE)
        return detach(relaunch_args(args, command), f"the server of {preset.name}")
    if detached():
        options = RecordOptions(name=args.name, quiet=True, views=views(args))
        return serve(preset, options, timeout_s=args.timeout, on_open=announce)
    dashboard = None
    if not args.load and not args.headless and interactive():

        def dashboard(path: Path, intr: Any) -> None:
            from effmon.tui.app import make_app, run_dashboard

            run_dashboard(make_app(path, mode="live"), intr)

    options = RecordOptions(name=args.name, quiet=args.quiet, views=views(args))
    from effmon.cli.loadview import print_load_summary

    return serve(preset, options, load=cfg, timeout_s=args.timeout, dashboard=dashboard, show_load=print_load_summary)


def _prompts(path: str) -> list[str]:
    from effmon.serving.load import jsonl_prompts

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--prompts {path}: no such file")
    prompts = jsonl_prompts(p.read_text(encoding="utf-8"), path)
    if not prompts:
        raise ValueError(f"--prompts {path}: the file holds no prompts")
    return prompts


def _load_setup(args: argparse.Namespace) -> tuple[Any, Any]:
    """The load's configuration and token counter from the command line; bad input raises RecordError (exit 2;
    1 when the server cannot be asked)."""
    from effmon.core.redact import redact_text
    from effmon.recording import EXIT_USAGE, RecordError
    from effmon.serving.load import DiscoveryError, LoadConfig, discover_model, parse_slo, token_counter
    from effmon.serving.tokens import TokenizerError

    try:
        slo_ttft, slo_tpot = parse_slo(args.slo) if args.slo else (None, None)
        prompts = _prompts(args.prompts) if args.prompts else None
    except ValueError as exc:
        raise RecordError(str(exc), EXIT_USAGE) from None
    if not args.url.startswith(("http://", "https://")):
        raise RecordError(f"{args.url!r} is not an http(s) URL; e.g. http://127.0.0.1:8000", EXIT_USAGE)
    try:
        model = args.model or discover_model(args.url, args.endpoint, min(args.timeout, 60.0))
    except DiscoveryError as exc:
        raise RecordError(str(exc), 1) from None
    concurrency = args.concurrency if args.concurrency is not None else (args.max_concurrency if args.rate else 8)
    cfg = LoadConfig(
        url=args.url,
        model=model,
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
        max_failures=args.max_failures,
        tokenizer=args.tokenizer,
    )
    try:
        counter = token_counter(cfg)
    except TokenizerError as exc:
        raise RecordError(str(exc), EXIT_USAGE) from None
    if args.tokenizer == "server" and counter is None:
        raise RecordError(
            f"{redact_text(args.url)} has no working /tokenize; give --tokenizer MODEL_DIR instead", EXIT_USAGE
        )
    return cfg, counter


def cmd_load(args: argparse.Namespace, command: list[str]) -> int:
    from effmon.cli.loadview import print_load_summary
    from effmon.core.files import check_target, safe_write
    from effmon.core.redact import redact_text
    from effmon.serving.load import load_session

    if args.json and args.json != "-":
        check_target(args.json, args.force)
    cfg, counter = _load_setup(args)

    def announce(path: Any) -> None:
        if args.quiet:
            return
        how = f"rate {cfg.rate}/s" if cfg.rate else f"concurrency {cfg.concurrency}"
        until = f"{cfg.duration:g} s" if cfg.duration else f"{cfg.requests} requests"
        counted = f"tokens: usage, else {counter.name}" if counter else "tokens: usage only"
        print(
            f"effmon load: {redact_text(args.url)} ({args.endpoint}), {how}, {until}, {counted}; recording {path.stem}",
            file=sys.stderr,
        )

    say = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    run = load_session(cfg, counter, name=args.name, command=["effmon", "load", args.url], announce=announce, say=say)
    summary = run.summary
    doc = summary.to_json()
    if args.json == "-":
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        print_load_summary(summary)
    if args.json and args.json != "-":
        safe_write(args.json, json.dumps(doc, indent=2) + "\n", args.force)
    if run.ending.status == "interrupted":
        return err(f"the load was {run.ending.reason}; the requests that ended are kept", 130)
    if summary.succeeded == 0:
        return err(_no_success(summary, redact_text(args.url), args.endpoint, cfg.model), 1)
    if run.ending.status == "failed":
        return err(run.ending.reason, 1)
    return 0


def _no_success(summary: Any, url: str, endpoint: str, model: str) -> str:
    """Why no request succeeded (``summary``: the LoadSummary), in words that match what happened."""
    from effmon.core.fmt import visible

    kinds = set(summary.errors)
    first = visible(summary.first_error or ", ".join(sorted(kinds)))
    if kinds <= {"connect"}:
        return f"no request succeeded: nothing answers at {url} ({first}); is the server up?"
    if kinds & {"http_404", "http_405"}:
        other = "completions" if endpoint == "chat" else "chat"
        return f"no request succeeded ({first}): {url} has no {endpoint} endpoint? try --endpoint {other}"
    if kinds & {"http_400", "http_422"}:
        return f"no request succeeded: the server refused the requests for model {model!r} ({first}); check --model"
    return f"no request succeeded ({first})"
