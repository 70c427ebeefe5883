"""The ``effmon`` command's entry point: a Ctrl-C while effmon itself is still loading ends in one line and
status 130, never a traceback (nothing has been started yet)."""

from __future__ import annotations

import sys


def run() -> int:
    try:
        from effmon.cli import main

        return main()
    except KeyboardInterrupt:
        sys.stderr.write("effmon: interrupted\n")
        return 130
