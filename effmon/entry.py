"""The ``effmon`` command's entry point: a Ctrl-C while effmon itself is still loading ends in one line and
status 130, never a traceback (nothing has been started yet)."""

from __future__ import annotations

import sys

from effmon.core.interrupt import by_interrupt


def run() -> int:
    try:
        from effmon.cli import main

        return main()
    except (KeyboardInterrupt, Exception) as exc:  # a Ctrl-C mid-import may come wrapped (see by_interrupt)
        if not by_interrupt(exc):
            raise
        sys.stderr.write("effmon: interrupted\n")
        return 130
