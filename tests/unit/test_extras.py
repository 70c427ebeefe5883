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


def test_a_command_is_shown_as_people_recognise_it():
    from effmon.core.fmt import short_command

    train = ["/venv/bin/python3.11", "/home/me/train.py", "--lr", "1e-4"]
    assert short_command(train) == "python3.11 train.py --lr 1e-4"
    assert short_command(["python", "-m", "torch.distributed.run", "--nproc_per_node", "2", "/a/b/t.py"]) == (
        "python -m torch.distributed.run --nproc_per_node 2 t.py"
    )
    assert short_command(["/usr/bin/bash", "./run.sh", "--out=/data/x"]) == "bash run.sh --out=/data/x"
    assert short_command([]) == ""


def test_many_phases_are_summed_per_kind_and_few_are_listed_with_signed_times():
    from effmon.report.render import PHASES_LISTED, phases_line

    logs = [{"name": "log", "t_start": 100.0 + i, "t_end": 100.5 + i} for i in range(100)]
    evals = [{"name": "eval", "t_start": 300.0, "t_end": 312.0}, {"name": "eval", "t_start": 400.0, "t_end": 410.0}]
    line = phases_line(logs + evals, 150.0)
    assert line.startswith("phases (102): log ×100 (50.0 s in all), eval ×2 (22.0 s in all)"), line  # longest first
    assert len(line) < 200
    few = phases_line([{"name": "warmup", "t_start": 140.0, "t_end": 160.0}], 150.0)
    assert few == "phases: warmup (-10–10 s)"  # before the recording began: a negative start, said as such
    assert PHASES_LISTED >= 6
