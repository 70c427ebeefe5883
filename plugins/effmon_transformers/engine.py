"""``transformers serve`` as a serving engine for ``effmon serve`` presets (``engine = "transformers"``)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any


def executable() -> str | None:
    """The ``transformers`` command of effmon's own environment first (it may not be on PATH), else PATH's."""
    own = Path(sys.executable).parent / "transformers"
    if own.is_file() and os.access(own, os.X_OK):
        return str(own)
    return shutil.which("transformers")


def command(fields: dict[str, Any], model_dir: str | None) -> list[str]:
    # the model is pinned (positional), so the server loads it before it reports healthy
    model = model_dir or str(fields.get("model"))
    return [
        executable() or "transformers",
        "serve",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(fields.get("port", 8000)),
        "--device",
        str(fields.get("device", "cpu")),
        *[str(a) for a in fields.get("extra_args", [])],
    ]


def available() -> bool:
    from effmon.core.extras import missing

    return executable() is not None and not missing("serve")


def prepare(fields: dict[str, Any], build: bool = True) -> str | None:
    """``model = "tiny"``: a tiny random Llama with a locally trained tokenizer, built once, offline.
    ``quantize = "int8" | "int4"``: a weight-only quantized copy of the model folder (torchao), built once beside
    it; the server loads it quantized (its config.json says how)."""
    method = fields.get("quantize")
    if fields.get("model") != "tiny" and not method:
        return None
    from effmon.core.paths import effmon_home

    folder = effmon_home() / "models" / "tiny-llama" if fields.get("model") == "tiny" else Path(str(fields["model"]))
    if not build:
        return str(folder.with_name(f"{folder.name}-{method}") if method else folder)
    if fields.get("model") == "tiny":
        from effmon.recipes.tiny_model import ensure

        folder = ensure(folder)
    if method:
        from effmon.recipes.quantize import quantized_folder

        folder = quantized_folder(folder, str(method), int(fields.get("group_size", 32)))
    return str(folder)
