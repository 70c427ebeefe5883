"""``effmon serve PRESET``: start an inference server from a preset, wait until it is healthy, record it
(and optionally load it), and stop it cleanly: the load first, then the server (SIGTERM, then SIGKILL after a
grace period), then the session."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from effmon.load import LoadConfig, run_load, summarize
from effmon.recorder import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    BackgroundRecording,
    Recorder,
    RecordError,
    RecordOptions,
    _Interrupts,
)

GRACE_S = 15.0

DIAGNOSES = (
    (
        ("CUDA out of memory", "OutOfMemoryError", "No available memory for the cache blocks", "not enough KV cache"),
        "the GPU has not enough memory for this model: lower --set gpu_memory_utilization "
        "or --set max_model_len, use a quantized preset, or a bigger GPU",
    ),
    (
        (
            "is not a local folder and is not a valid model identifier",
            "Repository Not Found",
            "does not appear to have",
            "We couldn't connect to",
            "offline mode",
            "HFValidationError",
            "No such file or directory",
            "Repo id must be in the form",
            "LocalEntryNotFoundError",
            "outgoing traffic has been disabled",
        ),
        "the model was not found: no such local folder, or a hub id that cannot be fetched (offline?); "
        "check --set model=...",
    ),
    (("Address already in use",), "the port is in use: pick another with --set port=..."),
    (
        ("No CUDA GPUs are available", "Failed to infer device type", "NVIDIA driver"),
        "no usable NVIDIA GPU: vLLM serves on GPUs; on a CPU try: effmon serve tiny-cpu",
    ),
    (("ModuleNotFoundError", "ImportError"), "a Python package is missing in the server's environment"),
)


def diagnose(log_text: str) -> str:
    for needles, advice in DIAGNOSES:
        if any(n in log_text for n in needles):
            return advice
    return "see the server log"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "".join(path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1.0) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def preflight(preset: Any) -> None:
    engine = preset.fields.get("engine")
    if engine == "vllm" and shutil.which("vllm") is None:
        raise RecordError(
            "vLLM is not installed: pip install 'effmon[vllm]' (it serves on NVIDIA GPUs). "
            "On a CPU, try: effmon serve tiny-cpu",
            EXIT_USAGE,
        )
    if engine == "transformers" and (
        shutil.which("transformers") is None or importlib.util.find_spec("fastapi") is None
    ):
        raise RecordError("transformers serve is not installed: pip install 'transformers[serving]'", EXIT_USAGE)
    model = str(preset.fields.get("model", ""))
    if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().exists():
        raise RecordError(
            f"model path {model} does not exist; give an existing directory or a hub id (--set model=...)", EXIT_USAGE
        )
    port = int(preset.fields.get("port", 8000))
    if not _port_free(port):
        raise RecordError(f"port {port} is in use (another server?); pick another: --set port={port + 1}", EXIT_USAGE)


def serve(
    preset: Any,
    options: RecordOptions,
    *,
    load: LoadConfig | None = None,
    timeout_s: float = 600.0,
    dashboard: bool = False,
) -> int:
    from effmon.load_cli import request_row
    from effmon.paths import effmon_home

    if preset.kind != "serve":
        raise RecordError(f"preset {preset.name} is a training preset: effmon run --preset {preset.name}", EXIT_USAGE)
    preflight(preset)
    f = preset.fields
    model_dir = None
    if f.get("engine") == "transformers" and f.get("model") == "tiny":
        from effmon.recipes.tiny_model import ensure

        model_dir = str(ensure(effmon_home() / "models" / "tiny-llama"))
    argv = preset.command(model_dir=model_dir)
    if f.get("engine") == "vllm":  # vLLM serves Prometheus metrics: scrape them into the session too
        from effmon.plugins import load_registry

        options.registry = options.registry or load_registry()
        options.sources = [n for n, s in options.registry.sources.items() if s.live] + ["vllm_metrics"]
    recorder = Recorder(
        "serve",
        options,
        slug=preset.name,
        extra_meta={
            "command": argv,
            "run_kind": "inference",
            "precision": f.get("precision"),
            "precision_bits": f.get("bits"),
            "preset": {"name": preset.name, "path": str(preset.path), **f},
        },
    )
    recorder.source_options.extra.update(metrics_url=preset.url + "/metrics", wait_for_server=True)
    recording = BackgroundRecording(options, recorder=recorder)
    recording.start()  # the sampler watches the server's process tree as soon as it exists
    assert recorder.sampler is not None and recorder.writer is not None
    log_path = recorder.path.with_suffix(".log")
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the server
    recorder.writer.set_meta(output_log=str(log_path))
    env = dict(os.environ)
    if model_dir:
        env.setdefault("HF_HUB_OFFLINE", "1")
    try:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    except OSError as exc:
        log.close()
        recording.stop("failed", f"could not start the server: {exc}")
        raise RecordError(f"could not start {argv[0]}: {exc.strerror or exc}", EXIT_ERROR) from None
    recorder.watched.append(server.pid)
    recorder.writer.set_meta(pid=server.pid, watched_pids=[server.pid])
    say = (lambda msg: None) if options.quiet else (lambda msg: print(msg, file=sys.stderr))
    status, reason, code = "complete", "the server was stopped", 0
    try:
        with _Interrupts() as intr:
            say(f"effmon serve: starting {preset.name}: {' '.join(argv)}")
            say(f"effmon serve: waiting until {preset.url}/health answers (log: {log_path})")
            started, shown = time.monotonic(), 0
            while not _healthy(preset.url):
                if server.poll() is not None:
                    text = _tail(log_path, 40)
                    status, reason = (
                        "failed",
                        f"the server exited with status {server.returncode} before it was healthy",
                    )
                    raise RecordError(
                        f"{reason}: {diagnose(text)}.\n--- end of the server log ({log_path}) ---\n{_tail(log_path)}",
                        EXIT_ERROR,
                    )
                if intr.count:
                    status, reason, code = (
                        "interrupted",
                        "stopped by the user while the server started",
                        EXIT_INTERRUPTED,
                    )
                    return code
                if time.monotonic() - started > timeout_s:
                    status, reason = "failed", f"the server was not healthy within {timeout_s:g} s"
                    raise RecordError(f"{reason} (raise --timeout); the log ends with:\n{_tail(log_path)}", EXIT_ERROR)
                lines = _tail(log_path, 1000).splitlines()
                for line in lines[shown:] if not options.quiet else []:
                    print(f"  server| {line}", file=sys.stderr)
                shown = len(lines)
                time.sleep(0.5)
            say(f"effmon serve: healthy at {preset.url} after {time.monotonic() - started:.1f} s")
            recorder.sampler.retry_now("vllm_metrics")
            if load is not None:
                load.url = preset.url
                load.model = load.model if load.model != "default" else (model_dir or str(f.get("model")))
                results, wall = asyncio.run(
                    run_load(
                        load,
                        on_result=lambda r: recorder.sink([request_row(r)]),
                        stop=lambda: intr.count > 0 or server.poll() is not None,
                    )
                )
                summary = summarize(results, wall, load)
                recorder.writer.set_meta(load_summary=summary)
                from effmon.load_cli import _print

                _print(summary, None)
                if server.poll() is not None:
                    status, reason = "failed", f"the server died under load (status {server.returncode})"
                    raise RecordError(f"{reason}: {diagnose(_tail(log_path, 40))}\n{_tail(log_path)}", EXIT_ERROR)
                if intr.count:
                    status, reason, code = "interrupted", "stopped by the user", EXIT_INTERRUPTED
                elif summary["succeeded"] == 0:
                    status, reason, code = "failed", "no request succeeded", EXIT_ERROR
                    print(f"effmon: error: no request succeeded ({summary['first_error']})", file=sys.stderr)
                else:
                    reason = "the load finished"
            elif dashboard:
                from effmon.tui.app import make_app

                make_app(recorder.path, mode="live").run()
                reason = "the dashboard was closed"
            else:
                say("effmon serve: serving; Ctrl-C stops the server and saves the session")
                while not intr.count and server.poll() is None:
                    intr.event.wait(0.5)
                if server.poll() is not None and not intr.count:
                    status, reason, code = "failed", f"the server exited (status {server.returncode})", EXIT_ERROR
                    print(
                        f"effmon: error: {reason}: {diagnose(_tail(log_path, 40))}\n{_tail(log_path)}", file=sys.stderr
                    )
                else:
                    status, reason, code = "interrupted", "stopped by the user", EXIT_INTERRUPTED
            return code
    finally:
        _stop_server(server)
        log.close()
        recording.stop(status, reason, server.returncode)
        say(f"effmon serve: session {recorder.path.stem} saved; report it with: effmon report {recorder.path.stem}")


def _stop_server(server: subprocess.Popen[Any]) -> None:
    """SIGTERM to the server's process group, then SIGKILL after a grace period."""
    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
    except ProcessLookupError:
        pass
