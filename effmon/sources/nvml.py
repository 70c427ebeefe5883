"""NVIDIA GPUs through NVML (the ``pynvml`` module of ``nvidia-ml-py``).

Cheap gauges (memory, utilisation, power, clocks, temperature, clock-event reasons:
≈20 µs a GPU on an H100) are read every tick. The energy counter (≈3 ms a call) and
process utilisation (≈1.4 ms) are read on slow channels, at most once a second, and
NVML GPM on its own channel. A call a GPU does not support is found once at open and
never made again: its metric reads N/A.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from effmon.core.declare import Row
from effmon.core.source import SourceInfo, SourceOptions, SourceUnavailable

# GPM metric ids (nvml.h): SM_UTIL=2, SM_OCCUPANCY=3, ANY_TENSOR_UTIL=5, DRAM_BW_UTIL=10,
# PCIE_TX_PER_SEC=20, PCIE_RX_PER_SEC=21 (MiB/s).
_GPM_METRICS = (
    ("sm_active_pct", 2, 1.0),
    ("sm_occupancy_pct", 3, 1.0),
    ("tensor_active_pct", 5, 1.0),
    ("dram_bw_pct", 10, 1.0),
    ("pcie_tx_bytes_s", 20, 1048576.0),
    ("pcie_rx_bytes_s", 21, 1048576.0),
)


class _Gpu:
    def __init__(self, index: int, handle: Any):
        self.index = index
        self.handle = handle
        self.gauges: list[tuple[str, Callable[[], Any]]] = []
        self.power_limit_w: float | None = None
        self.energy = False
        self.gpm = False
        self.gpm_samples: list[Any] = []
        self.gpm_have_prev = False
        self.proc_util_ts = 0
        self.lost_at: float | None = None


class NvmlSource:
    name = "nvml"

    def __init__(self, options: SourceOptions):
        self.options = options
        self.channels = {
            "fast": options.tick_s,
            "energy": options.slow_s,
            "procs": options.slow_s,
            "gpm": options.slow_s,
        }
        self.gpus: list[_Gpu] = []
        self.nv: Any = None
        self._said: list[Row] = []  # notices and metadata about lost GPUs, sent with the next read

    def open(self) -> SourceInfo:
        try:
            import pynvml as nv
        except ImportError:
            raise SourceUnavailable(
                "nvidia-ml-py is not installed (pip install nvidia-ml-py); GPU metrics are off"
            ) from None
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            raise SourceUnavailable(
                f"no NVIDIA driver found ({exc}); recording host metrics only. "
                "To see effmon on a recorded H100 instead, run: effmon demo"
            ) from None
        self.nv = nv
        count = nv.nvmlDeviceGetCount()
        if count == 0:
            nv.nvmlShutdown()
            raise SourceUnavailable("NVML found no GPUs; recording host metrics only")
        info = SourceInfo()
        driver = _text(_try(nv.nvmlSystemGetDriverVersion))
        for index in range(count):
            gpu = _Gpu(index, nv.nvmlDeviceGetHandleByIndex(index))
            self._probe(gpu, info)
            self.gpus.append(gpu)
            info.gpus.append(self._describe(gpu, driver))
        return info

    def _describe(self, gpu: _Gpu, driver: Any) -> dict[str, Any]:
        nv, h = self.nv, gpu.handle
        mem = _try(lambda: nv.nvmlDeviceGetMemoryInfo(h))
        return {
            "index": gpu.index,
            "name": _text(_try(lambda: nv.nvmlDeviceGetName(h))),
            "uuid": _text(_try(lambda: nv.nvmlDeviceGetUUID(h))),
            "mem_total_bytes": getattr(mem, "total", None),
            "power_limit_w": gpu.power_limit_w,
            "max_sm_clock_mhz": _try(lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)),
            "driver": driver,
            "gpm": gpu.gpm,
            "energy_counter": gpu.energy,
        }

    def _probe(self, gpu: _Gpu, info: SourceInfo) -> None:
        nv, h = self.nv, gpu.handle
        candidates: list[tuple[str, Callable[[], Any]]] = [
            ("mem", lambda: nv.nvmlDeviceGetMemoryInfo(h)),
            ("util", lambda: nv.nvmlDeviceGetUtilizationRates(h)),
            ("power_w", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
            ("sm_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            ("mem_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
            ("temp_c", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
            ("clock_event_reasons", self._reasons_fn(h)),
        ]
        for name, fn in candidates:
            try:
                fn()
                gpu.gauges.append((name, fn))
            except nv.NVMLError as exc:
                info.unsupported[f"gpu.{name}@{gpu.index}"] = str(exc)
        gpu.power_limit_w = _try(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0)
        try:
            nv.nvmlDeviceGetTotalEnergyConsumption(h)
            gpu.energy = True
        except nv.NVMLError as exc:
            info.unsupported[f"gpu_energy.energy_counter_j@{gpu.index}"] = str(exc)
        try:
            gpu.gpm = bool(nv.nvmlGpmQueryDeviceSupport(h).isSupportedDevice)
        except (nv.NVMLError, AttributeError) as exc:
            gpu.gpm = False
            info.unsupported[f"gpu_gpm.*@{gpu.index}"] = f"NVML GPM unavailable: {exc}"
        if gpu.gpm:
            gpu.gpm_samples = [nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()]
        else:
            info.unsupported.setdefault(
                f"gpu_gpm.*@{gpu.index}", "NVML GPM is not supported on this GPU (Hopper or newer)"
            )

    def _power_limit(self, handle: Any) -> float:
        return float(self.nv.nvmlDeviceGetEnforcedPowerLimit(handle)) / 1000.0

    def _reasons_fn(self, h: Any) -> Callable[[], Any]:
        nv = self.nv
        fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        return lambda: fn(h)

    def read(self, channel: str, now: float) -> list[Row]:
        """One channel over every GPU still here. A GPU the driver reports lost (fallen off the bus, XID 79) is
        said once, kept in the session's metadata, and read no more; the other GPUs go on."""
        reader = {"fast": self._fast, "energy": self._energy, "procs": self._procs, "gpm": self._gpm}[channel]
        rows: list[Row] = []
        for gpu in self.gpus:
            if gpu.lost_at is not None:
                continue
            try:
                rows.extend(reader(gpu, now))
            except self.nv.NVMLError as exc:
                if not self._lost(gpu, exc, now):
                    raise
        said, self._said = self._said, []
        return rows + said

    def _lost(self, gpu: _Gpu, exc: Exception, now: float) -> bool:
        if getattr(exc, "value", None) != getattr(self.nv, "NVML_ERROR_GPU_IS_LOST", 15):
            return False
        gpu.lost_at = now
        self._said.append(
            Row(
                "notice",
                {
                    "level": "error",
                    "t": now,
                    "text": f"GPU {gpu.index} lost ({exc}): its readings stop here; the other GPUs go on",
                },
            )
        )
        self._said.append(Row("meta", {"lost_gpus": {str(g.index): g.lost_at for g in self.gpus if g.lost_at}}))
        return True

    def _fast(self, gpu: _Gpu, now: float) -> list[Row]:
        values: dict[str, Any] = {"t": now, "gpu": gpu.index, "power_limit_w": gpu.power_limit_w}
        for name, fn in gpu.gauges:
            try:
                result = fn()
            except self.nv.NVMLError as exc:
                if self._lost(gpu, exc, now):
                    return []
                continue  # a passing failure reads N/A for this tick
            if name == "mem":
                values["mem_used_bytes"], values["mem_total_bytes"] = result.used, result.total
            elif name == "util":
                values["util_gpu_pct"], values["util_mem_pct"] = result.gpu, result.memory
            else:
                values[name] = result
        return [Row("gpu", values)]

    def _energy(self, gpu: _Gpu, now: float) -> list[Row]:
        counter = None
        if gpu.energy:
            counter = self.nv.nvmlDeviceGetTotalEnergyConsumption(gpu.handle) / 1000.0
        gpu.power_limit_w = _try(partial(self._power_limit, gpu.handle))
        return [Row("gpu_energy", {"t": now, "gpu": gpu.index, "energy_counter_j": counter})]

    def _procs(self, gpu: _Gpu, now: float) -> list[Row]:
        nv = self.nv
        rows = []
        procs = {p.pid: p for p in nv.nvmlDeviceGetComputeRunningProcesses(gpu.handle)}
        util: dict[int, Any] = {}
        try:
            for sample in nv.nvmlDeviceGetProcessUtilization(gpu.handle, gpu.proc_util_ts):
                gpu.proc_util_ts = max(gpu.proc_util_ts, sample.timeStamp)
                util[sample.pid] = sample
        except nv.NVMLError as exc:
            if exc.value == getattr(nv, "NVML_ERROR_GPU_IS_LOST", 15):
                raise
            # NOT_FOUND when no sample is newer than the last one
        for pid in sorted(set(procs) | set(util)):
            proc, sample = procs.get(pid), util.get(pid)
            rows.append(
                Row(
                    "gpu_process",
                    {
                        "t": now,
                        "gpu": gpu.index,
                        "pid": pid,
                        "used_mem_bytes": getattr(proc, "usedGpuMemory", None),
                        "sm_util_pct": getattr(sample, "smUtil", None),
                        "mem_util_pct": getattr(sample, "memUtil", None),
                    },
                )
            )
        return rows

    def _gpm(self, gpu: _Gpu, now: float) -> list[Row]:
        nv = self.nv
        if not gpu.gpm:
            return []
        prev, cur = gpu.gpm_samples
        nv.nvmlGpmSampleGet(gpu.handle, cur)
        rows = []
        if gpu.gpm_have_prev:
            req = nv.c_nvmlGpmMetricsGet_t()
            req.version = nv.NVML_GPM_METRICS_GET_VERSION
            req.numMetrics = len(_GPM_METRICS)
            req.sample1, req.sample2 = prev, cur
            for i, (_, metric_id, _) in enumerate(_GPM_METRICS):
                req.metrics[i].metricId = metric_id
            nv.nvmlGpmMetricsGet(req)
            values: dict[str, Any] = {"t": now, "gpu": gpu.index}
            for i, (name, _, scale) in enumerate(_GPM_METRICS):
                metric = req.metrics[i]
                values[name] = metric.value * scale if metric.nvmlReturn == nv.NVML_SUCCESS else None
            rows.append(Row("gpu_gpm", values))
        gpu.gpm_samples = [cur, prev]
        gpu.gpm_have_prev = True
        return rows

    def close(self) -> None:
        if self.nv is None:
            return
        for gpu in self.gpus:
            for sample in gpu.gpm_samples:
                _try(partial(self.nv.nvmlGpmSampleFree, sample))
        _try(self.nv.nvmlShutdown)
        self.nv = None


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
