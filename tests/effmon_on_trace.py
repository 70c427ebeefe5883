"""effmon's command line on a machine whose NVIDIA driver is ``trace_nvml``'s stand-in (the real H100 readings of
the bundled trace, at wall-clock time): a subprocess test records real GPU readings on a machine without a GPU.

    python -m tests.effmon_on_trace record -- python train.py
"""

from __future__ import annotations

import sys
import time

from tests import trace_nvml

sys.modules["pynvml"] = trace_nvml.make(time.time, gpus=1)

from effmon.cli import main  # noqa: E402 - after the driver is in place

if __name__ == "__main__":
    raise SystemExit(main())
