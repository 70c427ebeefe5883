"""Benchmarks cannot rot: each one's --quick run finishes and prints its table (its numbers are not checked here:
they are measured, on a quiet machine, into docs/benchmarks.md). A GPU-only benchmark on a machine without an
NVIDIA GPU says so in one line, without a traceback."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

BENCHMARKS = sorted(p.name for p in (REPO / "benchmarks").glob("*.py") if p.name not in ("synth.py", "__init__.py"))
GPU_ONLY = {"gpu_energy_check.py", "gpu_quant_compare.py", "gpu_sweep.py"}


def has_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        return False


def test_every_benchmark_is_listed_here():
    assert len(BENCHMARKS) >= 15 and "bench_sampler.py" in BENCHMARKS


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_run_prints_its_table(name, tmp_path):
    if name in GPU_ONLY and has_gpu():
        pytest.skip("a GPU is here: run it for real (docs/benchmarks.md)")
    env = {**os.environ, "EFFMON_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), "--quick"],
        cwd=tmp_path if name in GPU_ONLY else REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        start_new_session=True,
    )
    if name in GPU_ONLY:
        assert res.returncode != 0 and "needs an NVIDIA GPU" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
        return
    assert res.returncode == 0, res.stderr[-3000:]
    assert "|---" in res.stdout, res.stdout[-2000:]  # its Markdown table
