"""What a command says when an optional part is missing: the install line for this machine."""

import os

from effmon.core.extras import install_line, nvidia_gpu


def test_the_install_line_pins_the_cpu_torch_where_there_is_no_nvidia_gpu():
    assert nvidia_gpu() == (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia"))
    line = install_line("train", ["torch", "peft"])
    if nvidia_gpu():
        assert line == "pip install 'effmon[train]'"
    else:
        assert line.startswith("pip install torch==2.13.0 'effmon[train]'") and "no NVIDIA GPU" in line
    assert install_line("train", ["peft"]) == "pip install 'effmon[train]'"  # torch is there: nothing to pin
    assert install_line("report", ["matplotlib"]) == "pip install 'effmon[report]'"
