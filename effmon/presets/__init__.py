"""Presets: TOML files that say what ``effmon run`` launches. The bundled ones live beside this file.

A preset is checked against ``SCHEMA`` when loaded: an unknown key or a value of the wrong type is an
error that names the key, the file and the line. ``--set key=value`` overrides a field, with the
value converted to the field's type.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TRAIN_SCHEMA: dict[str, type] = {
    "model": str,
    "dataset": str,
    "method": str,
    "r": int,
    "alpha": int,
    "target_modules": str,
    "steps": int,
    "batch_size": int,
    "seq_len": int,
    "lr": float,
    "output_dir": str,
}
SERVE_SCHEMA: dict[str, type] = {
    "engine": str,
    "model": str,
    "quantization": str,
    "quantize": str,  # transformers engine: int8 | int4, a weight-only copy of the model folder made by torchao
    "group_size": int,
    "device": str,  # transformers engine: cpu (default) or cuda
    "dtype": str,
    "kv_cache_dtype": str,
    "max_model_len": int,
    "gpu_memory_utilization": float,
    "tensor_parallel_size": int,
    "port": int,
    "precision": str,
    "bits": int,
    "extra_args": list,
}
SCHEMAS: dict[str, dict[str, type]] = {"train": TRAIN_SCHEMA, "serve": SERVE_SCHEMA}
TOP_SCHEMA: dict[str, type] = {"description": str, "kind": str, "train": dict, "serve": dict}
METHODS = ("lora", "rslora", "dora", "pissa", "full")
RANGES: dict[str, tuple[float | None, float | None]] = {
    "port": (1, 65535),
    "r": (1, None),
    "alpha": (1, None),
    "steps": (1, None),
    "batch_size": (1, None),
    "seq_len": (1, None),
    "lr": (0, None),
    "max_model_len": (1, None),
    "gpu_memory_utilization": (0.01, 1.0),
    "tensor_parallel_size": (1, None),
    "bits": (1, 64),
}
"""Numbers a preset field may hold (and every float must be finite)."""


class PresetError(Exception):
    pass


def engine(name: str, where: str = "") -> Any:
    """The serving engine a plugin registered under ``name`` (vLLM, transformers serve ...)."""
    from effmon.plugins import load_registry

    engines = load_registry().engines
    if name not in engines:
        prefix = f"{where}: " if where else ""
        raise PresetError(f"{prefix}engine {name!r} is not one of {', '.join(engines) or 'none installed'}")
    return engines[name]


@dataclass
class Preset:
    name: str
    path: Path
    description: str
    kind: str
    fields: dict[str, Any]

    @property
    def train(self) -> dict[str, Any]:
        return self.fields

    def command(self, output_dir: str | None = None, model_dir: str | None = None, resolve: bool = False) -> list[str]:
        """The exact argv. ``resolve``: what ``effmon run`` / ``effmon serve`` will run, for showing it (a serving
        engine's local model folder named, not built; a run's output folder is the session's, decided then)."""
        if self.kind == "serve":
            spec = engine(str(self.fields.get("engine")))
            if resolve and model_dir is None and spec.prepare is not None:
                model_dir = spec.prepare(self.fields, False)
            return self._serve_command(model_dir)
        t = dict(self.fields)
        if resolve and output_dir is None and not t.get("output_dir"):
            output_dir = "$EFFMON_HOME/sessions/SESSION.out"
        argv = [sys.executable, "-m", "effmon.recipes.finetune"]
        for key in (
            "model",
            "dataset",
            "method",
            "r",
            "alpha",
            "target_modules",
            "steps",
            "batch_size",
            "seq_len",
            "lr",
        ):
            if key in t:
                argv += [f"--{key.replace('_', '-')}", str(t[key])]
        argv += ["--output-dir", str(t.get("output_dir") or output_dir or "effmon-finetune-out")]
        return argv

    def _serve_command(self, model_dir: str | None) -> list[str]:
        return engine(str(self.fields.get("engine"))).command(self.fields, model_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.fields.get('port', 8000)}"


def _line_of(text: str, key: str) -> int | None:
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return i
    return None


def bundled() -> dict[str, Path]:
    folder = resources.files("effmon") / "presets"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".toml")}


def find(name: str) -> Path:
    path = Path(name).expanduser()
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise PresetError(f"preset file {path} does not exist")
        return path
    presets = bundled()
    if name not in presets:
        raise PresetError(f"no preset named {name!r}; bundled: {', '.join(sorted(presets))} (or give a .toml path)")
    return presets[name]


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PresetError(f"{path}: not a text file (a preset is TOML, e.g. {bundled()['lora-tiny']})") from None
    except OSError as exc:
        raise PresetError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def load(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Preset:
    path = find(name)
    text = _text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: not valid TOML ({exc})") from None

    def where(key: str) -> str:
        line = _line_of(text, key)
        return f"{path}:{line}" if line else str(path)

    for key, value in data.items():
        if key not in TOP_SCHEMA:
            raise PresetError(f"{where(key)}: unknown key {key!r}; known: {', '.join(TOP_SCHEMA)}")
        if not isinstance(value, TOP_SCHEMA[key]):
            raise PresetError(f"{where(key)}: {key!r} must be a {TOP_SCHEMA[key].__name__}, got {value!r}")
    kind = data.get("kind", "train")
    if kind not in SCHEMAS:
        raise PresetError(f"{where('kind')}: kind {kind!r} is not one of {', '.join(SCHEMAS)}")
    schema = SCHEMAS[kind]
    fields = dict(data.get(kind) or {})
    for key, value in fields.items():
        _check(key, value, where(key), schema, kind)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise PresetError(f"--set {item!r}: use KEY=VALUE, e.g. --set r=16")
        if key not in schema:
            raise PresetError(f"--set {key}: unknown key; known: {', '.join(schema)}")
        fields[key] = _convert(key, raw.strip(), schema, kind)
    return Preset(path.stem, path, str(data.get("description", "")), kind, fields)


def _check(key: str, value: Any, where: str, schema: dict[str, type] = TRAIN_SCHEMA, kind: str = "train") -> None:
    if key not in schema:
        raise PresetError(f"{where}: unknown key {key!r} in [{kind}]; known: {', '.join(schema)}")
    typ = schema[key]
    ok = (
        isinstance(value, typ)
        and not isinstance(value, bool)
        or (typ is float and isinstance(value, int) and not isinstance(value, bool))
    )
    if not ok:
        raise PresetError(f"{where}: {key!r} must be {typ.__name__}, got {value!r} ({type(value).__name__})")
    if key == "method" and value not in METHODS:
        raise PresetError(f"{where}: method {value!r} is not one of {', '.join(METHODS)}")
    low, high = RANGES.get(key, (None, None))
    if isinstance(value, (int, float)) and not (
        math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high)
    ):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}" if low is not None else "finite"
        raise PresetError(f"{where}: {key} must be {bounds}, got {value!r}")
    if key == "engine":
        engine(value, where)


def _convert(key: str, raw: str, schema: dict[str, type] = TRAIN_SCHEMA, kind: str = "train") -> Any:
    typ = schema[key]
    try:
        value: Any = raw.split() if typ is list else typ(raw)
    except ValueError:
        raise PresetError(f"--set {key}={raw}: {key} must be {typ.__name__}") from None
    _check(key, value, f"--set {key}", schema, kind)
    return value
