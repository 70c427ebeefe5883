"""A quiet start for effmon's own scripts (the fine-tune and quantize recipes, the tiny model's build): notices from
the libraries they load that mean nothing on this machine (torchao's CUDA kernels it could not load on a CPU,
torch's and transformers' deprecation warnings, DeepSpeed guessing the accelerator) go to a log file, not the
terminal; errors still show. The script says where the file is when it holds anything."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

NOISY = ("torchao", "torch.utils._pytree", "torch._dynamo", "DeepSpeed", "py.warnings")
"""Loggers whose warnings are kept off the terminal (``py.warnings``: Python's warnings, once captured)."""


def quiet_start(log: Path | None) -> Path | None:
    """Send the libraries' notices to ``log`` (0600; None: dropped), and keep errors on stderr. Call before
    importing torch or transformers. Returns the log's path."""
    from effmon.core.extras import nvidia_gpu

    if not nvidia_gpu():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed would warn it guessed the CPU
    logging.captureWarnings(True)
    warnings.simplefilter("default")  # each warning once per place, into the log
    handler: logging.Handler = logging.NullHandler()
    if log is not None:
        from effmon.core.files import create_private

        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.close(create_private(log))
        except FileExistsError:
            pass
        handler = logging.FileHandler(log, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.ERROR)
    for name in NOISY:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler, errors]
        logger.propagate = False
    return log


def say_where(log: Path | None, who: str) -> None:
    """At the end: one line naming the log when a library wrote to it."""
    if log is not None and log.exists() and log.stat().st_size:
        print(f"{who}: library notices (warnings of torch, transformers, torchao ...) are in {log}", file=sys.stderr)
