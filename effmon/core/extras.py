"""Optional parts of effmon and what a command says when one is missing: one line, the exact install."""

from __future__ import annotations

import importlib.util

EXTRAS = {
    "train": ("torch", "transformers", "peft", "accelerate"),
    "report": ("matplotlib",),
    "serve": ("transformers", "fastapi", "uvicorn", "torch"),
    "tensorboard": ("tensorboard",),
    "web": ("textual_serve",),
    "quant": ("torchao",),
}
"""What each extra of ``pip install 'effmon[EXTRA]'`` brings, by import name."""


class MissingExtra(Exception):
    """A command needs an optional part that is not installed. Exit status 2, message says the fix."""

    code = 2


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(extra: str) -> list[str]:
    return [m for m in EXTRAS[extra] if not installed(m)]


def need(extra: str, what: str) -> None:
    """Raise ``MissingExtra`` when ``extra`` is not fully installed, naming ``what`` needs it."""
    absent = missing(extra)
    if absent:
        raise MissingExtra(
            f"{what} needs {', '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} not installed: "
            + install_line(extra, absent)
        )


def install_line(extra: str, absent: list[str]) -> str:
    """The install for this machine: without an NVIDIA GPU, torch pinned to the CPU build the README uses (a bare
    ``torch`` pulls several GB of CUDA libraries a CPU cannot use)."""
    line = f"pip install 'effmon[{extra}]'"
    if "torch" in absent and not nvidia_gpu():
        return f"pip install torch==2.13.0 'effmon[{extra}]' (the CPU build of torch: this machine has no NVIDIA GPU)"
    return line


def nvidia_gpu() -> bool:
    """An NVIDIA driver on this machine (its device files), without loading NVML."""
    import os

    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")
