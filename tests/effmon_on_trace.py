"""effmon's command line on a machine whose NVIDIA driver is ``trace_nvml``'s stand-in (the real H100 readings of
the bundled trace, at wall-clock time): a subprocess test records real GPU readings on a machine without a GPU.

    python -m tests.effmon_on_trace record -- python train.py
"""

from __future__ import annotations

import os
import sys
import time

from tests import trace_nvml

# EFFMON_TEST_NVML_UNPRIVILEGED=1: the driver refuses clock and power-limit changes, as for a user who is not root
unprivileged = os.environ.get("EFFMON_TEST_NVML_UNPRIVILEGED") == "1"
sys.modules["pynvml"] = trace_nvml.make(time.time, gpus=1, privileged=not unprivileged)

from effmon.cli import main  # noqa: E402 - after the driver is in place

if __name__ == "__main__":
    raise SystemExit(main())
