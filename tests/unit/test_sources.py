"""The plugin API, and the NVML source's logic on a stand-in driver (no GPU on CI)."""

import sys

import pytest

from effmon.core.clock import VirtualClock
from effmon.core.declare import Entity, M, Row
from effmon.core.store import SessionReader
from effmon.plugins import SourceInfo, SourceSpec, hookimpl, load_registry
from effmon.recording import Recording, RecordOptions


class FanSource:
    name = "fans"
    channels = {"rpm": 0.5}

    def __init__(self, options):
        self.options = options

    def open(self):
        return SourceInfo(meta={"fans": 2})

    def read(self, channel, now):
        return [Row("fan", {"t": now, "fan": i, "rpm": 1000.0 + i}) for i in range(2)]

    def close(self):
        pass


FAN = Entity("fan", keys=("fan",), description="Chassis fans", metrics=(M("rpm", "rpm", "gauge", "Fan speed"),))


class FanPlugin:
    @hookimpl
    def effmon_register_sources(self, register):
        register(SourceSpec("fans", "Chassis fans", (FAN,), FanSource))


class BrokenPlugin:
    @hookimpl
    def effmon_register_sources(self, register):
        raise RuntimeError("oops")


def test_builtins_register_through_the_same_hook():
    reg = load_registry(entry_points=False)
    assert set(reg.sources) == {"nvml", "host", "track", "replay", "dcgm"}
    assert reg.sources["replay"].live is False and reg.sources["dcgm"].live is False  # only when asked for
    assert "power_w" in [m.name for m in reg.entities()["gpu"].metrics]


def test_a_third_party_source_is_recorded_with_its_declared_metrics(home):
    reg = load_registry(entry_points=False, extra_plugins=(FanPlugin(), BrokenPlugin()))
    assert "fans" in reg.sources
    assert any("failed to register" in e and "oops" in e for e in reg.load_errors)
    rec = Recording("command", RecordOptions(name="fans", sources=("fans",), quiet=True), registry=reg)
    clock = VirtualClock(100.0)
    rec.open(clock=clock)
    rec.sampler.run(until=lambda now: now >= 102.0)
    rec.finish("complete")
    with SessionReader(rec.path) as r:
        assert r.count("fan") == 12  # 2 fans x (5 reads at 0, 0.5, ... 2.0 + the final read at stop)
        assert r.entities()["fan"].metric("rpm").unit == "rpm"
        assert r.meta()["fans"] == 2
        assert any("oops" in n[2] for n in r.notices())


@pytest.fixture
def trace_driver(monkeypatch):
    from tests import trace_nvml

    clock = VirtualClock(1000.0)
    nv = trace_nvml.make(clock.now)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    return clock, nv


def test_nvml_source_reads_cheap_gauges_every_tick_and_expensive_calls_rarely(home, trace_driver):
    clock, nv = trace_driver
    rec = Recording("command", RecordOptions(name="nvml", sources=("nvml",), quiet=True))
    rec.open(clock=clock)
    rec.sampler.run(until=lambda now: now >= 1020.0)  # 20 s at 10 Hz
    rec.finish("complete")
    gpus = 2
    assert nv.calls["nvmlDeviceGetPowerUsage"] == gpus * (201 + 1 + 1)  # + the probe at open, the final read
    # 1 Hz: 21 reads in 20 s, one final read at the end, one probe at open (GPU 1 has no counter)
    assert nv.calls["nvmlDeviceGetTotalEnergyConsumption"] <= 2 * (21 + 1 + 1)
    assert nv.calls["nvmlDeviceGetProcessUtilization"] <= gpus * (21 + 1)
    # memory clock is not supported here: probed once, never called again, N/A in the session
    assert nv.calls["nvmlDeviceGetClockInfo"] == gpus * (201 + 1) + gpus * 2
    with SessionReader(rec.path) as r:
        meta = r.meta()
        assert {g["name"] for g in meta["gpus"]} == {"NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"}
        assert "gpu.mem_clock_mhz@0" in meta["unsupported"]
        assert "gpu_gpm.*@1" in meta["unsupported"] and "gpu_energy.energy_counter_j@1" in meta["unsupported"]
        rows = [x for x in r.rows("gpu") if x["gpu"] == 0]
        assert len(rows) == 202 and all(x["mem_clock_mhz"] is None for x in rows)
        assert rows[0]["power_limit_w"] == 700.0
        gpm = r.rows("gpu_gpm")
        assert gpm and {x["gpu"] for x in gpm} == {0}  # GPU 1 has no GPM
        energy = [x for x in r.rows("gpu_energy") if x["gpu"] == 1]
        assert energy and all(x["energy_counter_j"] is None for x in energy)
        assert energy[-1]["energy_integrated_j"] > 0  # integrated power still gives energy
        procs = r.rows("gpu_process")
        assert procs and procs[0]["pid"] == 4242 and procs[0]["sm_util_pct"] is not None


def test_nvml_source_report_names_gpm_where_present_and_nvml_util_elsewhere(home, trace_driver):
    from effmon.metrics import evaluate

    clock, nv = trace_driver
    rec = Recording("command", RecordOptions(name="nvml2", sources=("nvml",), quiet=True))
    rec.open(clock=clock)
    rec.sampler.run(until=lambda now: now >= 1015.0)
    rec.finish("complete")
    with SessionReader(rec.path) as r:
        s = evaluate(r)
    by_gpu = {g.index: g for g in s.gpus}
    assert by_gpu[0].pcu_source == "nvml_gpm_sm_active"
    assert by_gpu[1].pcu_source == "nvml_utilization_gpu"
    assert by_gpu[1].energy_counter_j is None and by_gpu[1].energy_integrated_j > 0
    assert s.value("energy_counter_j") is None  # not every GPU has a counter: the sum would lie
    assert "energy counter" in s.result("energy_counter_j").reason
