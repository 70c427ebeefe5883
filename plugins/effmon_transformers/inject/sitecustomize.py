"""Started by ``effmon run`` at interpreter start: instrument transformers.Trainer if it gets imported.

Stdlib only, and a failure here never stops the user's program. Another ``sitecustomize`` further
down the path (the user's own) still runs.
"""

import importlib.util
import os
import sys


def _install() -> None:
    try:
        from effmon_transformers.hook import install

        install()
    except Exception as exc:  # never break the user's program
        sys.stderr.write(f"effmon: the transformers instrumentation is off ({exc})\n")


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_effmon_chained_sitecustomize", candidate)
            if spec and spec.loader:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


_install()
_chain()
