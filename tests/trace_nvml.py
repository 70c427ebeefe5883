"""A stand-in for the NVIDIA driver on machines without one: answers the pynvml calls effmon makes
with the real H100 readings of ``h100_phases.jsonl`` at the sampler's current time.

It keeps pynvml's own ctypes structures (``c_nvmlGpmMetricsGet_t``), constants and error class, so the
NVML source's request building and decoding run for real; only the driver behind them is replaced.
GPU 1 plays a pre-Hopper GPU: no GPM, no energy counter. Every call is counted.
"""

from __future__ import annotations

import bisect
import threading
import types
from collections import Counter
from collections.abc import Callable
from typing import Any

import pynvml as real

from tests.conftest import trace_lines


def make(
    now: Callable[[], float],
    gpus: int = 2,
    hang_after: float | None = None,
    lose: tuple[int, float] | None = None,
    privileged: bool = True,
) -> types.ModuleType:
    """``hang_after``: seconds after which every device call blocks (a hung driver; ``nv.release`` lets them
    return). ``lose``: (GPU index, seconds) after which that GPU's calls fail with NVML_ERROR_GPU_IS_LOST.
    ``privileged``: whether setting clocks and power limits is allowed (else NVML_ERROR_NO_PERMISSION, as for a
    user who is not root); ``nv.settings`` holds what is set: a locked SM clock reads back as the SM clock."""
    rows = [x for x in trace_lines() if x["kind"] == "gpu"]
    times = [r["t"] for r in rows]
    t0 = times[0]
    calls: Counter[str] = Counter()
    nv = types.ModuleType("pynvml")
    for name in (
        "NVMLError",
        "NVML_CLOCK_SM",
        "NVML_CLOCK_MEM",
        "NVML_TEMPERATURE_GPU",
        "NVML_SUCCESS",
        "NVML_GPM_METRICS_GET_VERSION",
        "c_nvmlGpmMetricsGet_t",
        "NVML_ERROR_NOT_SUPPORTED",
        "NVML_ERROR_NOT_FOUND",
        "NVML_ERROR_GPU_IS_LOST",
        "NVML_ERROR_NO_PERMISSION",
        "NVML_ERROR_INVALID_ARGUMENT",
        "NVML_CLOCK_SM",
    ):
        setattr(nv, name, getattr(real, name))
    nv.calls = calls  # type: ignore[attr-defined]
    release = threading.Event()
    nv.release = release  # type: ignore[attr-defined]

    def rec() -> dict[str, Any]:
        i = max(0, bisect.bisect_right(times, t0 + (now() - START[0])) - 1)
        return rows[i]

    START = [now()]

    def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any) -> Any:
            calls[fn.__name__] += 1
            device_call = fn.__name__.startswith("nvmlDevice") and a and isinstance(a[0], int)
            elapsed = now() - START[0]
            if device_call and hang_after is not None and elapsed >= hang_after:
                release.wait()  # the driver stops answering
            if device_call and lose is not None and a[0] == lose[0] and elapsed >= lose[1]:
                raise real.NVMLError(real.NVML_ERROR_GPU_IS_LOST)
            return fn(*a)

        wrapper.__name__ = fn.__name__
        return wrapper

    def not_supported() -> Exception:
        return real.NVMLError(real.NVML_ERROR_NOT_SUPPORTED)

    @counted
    def nvmlInit() -> None: ...
    @counted
    def nvmlShutdown() -> None: ...
    @counted
    def nvmlDeviceGetCount() -> int:
        return gpus

    @counted
    def nvmlDeviceGetHandleByIndex(i: int) -> int:
        return i

    @counted
    def nvmlSystemGetDriverVersion() -> str:
        return "580.159.04"

    @counted
    def nvmlDeviceGetName(h: int) -> str:
        return "NVIDIA H100 80GB HBM3" if h == 0 else "NVIDIA A100-SXM4-40GB"

    @counted
    def nvmlDeviceGetUUID(h: int) -> str:
        return f"GPU-{h:08d}"

    @counted
    def nvmlDeviceGetMaxClockInfo(h: int, c: int) -> int:
        return 1980

    @counted
    def nvmlDeviceGetMemoryInfo(h: int) -> Any:
        r = rec()
        return types.SimpleNamespace(used=r["mem_used_bytes"], total=r["mem_total_bytes"], free=0)

    @counted
    def nvmlDeviceGetUtilizationRates(h: int) -> Any:
        r = rec()
        return types.SimpleNamespace(gpu=r["util_gpu_pct"], memory=r["util_mem_pct"])

    @counted
    def nvmlDeviceGetPowerUsage(h: int) -> int:
        return int(rec()["power_w"] * 1000)

    @counted
    def nvmlDeviceGetClockInfo(h: int, c: int) -> int:
        if c == real.NVML_CLOCK_MEM:
            raise not_supported()
        locked = settings["locked"].get(h)
        return locked if locked is not None else rec()["sm_clock_mhz"]

    settings: dict[str, dict[int, Any]] = {"locked": {}, "limit_mw": {}}
    nv.settings = settings  # type: ignore[attr-defined]

    def allowed() -> None:
        if not privileged:
            raise real.NVMLError(real.NVML_ERROR_NO_PERMISSION)

    @counted
    def nvmlDeviceSetGpuLockedClocks(h: int, lo: int, hi: int) -> None:
        allowed()
        if not 0 < lo <= hi <= 1980:
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        settings["locked"][h] = hi

    @counted
    def nvmlDeviceResetGpuLockedClocks(h: int) -> None:
        allowed()
        settings["locked"].pop(h, None)

    @counted
    def nvmlDeviceGetPowerManagementLimit(h: int) -> int:
        return int(settings["limit_mw"].get(h, 700000))

    @counted
    def nvmlDeviceGetPowerManagementDefaultLimit(h: int) -> int:
        return 700000

    @counted
    def nvmlDeviceGetPowerManagementLimitConstraints(h: int) -> list[int]:
        return [200000, 700000]

    @counted
    def nvmlDeviceSetPowerManagementLimit(h: int, mw: int) -> None:
        allowed()
        if not 200000 <= mw <= 700000:
            raise real.NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        settings["limit_mw"][h] = mw

    @counted
    def nvmlDeviceGetTemperature(h: int, s: int) -> int:
        return rec()["temp_c"]

    @counted
    def nvmlDeviceGetCurrentClocksEventReasons(h: int) -> int:
        return 0x4 if rec()["power_w"] > 690 else 0

    @counted
    def nvmlDeviceGetEnforcedPowerLimit(h: int) -> int:
        return int(settings["limit_mw"].get(h, 700000))

    @counted
    def nvmlDeviceGetTotalEnergyConsumption(h: int) -> int:
        if h == 1:
            raise not_supported()
        return int(rec()["energy_j"] * 1000)

    @counted
    def nvmlGpmQueryDeviceSupport(h: int) -> Any:
        return types.SimpleNamespace(isSupportedDevice=int(h == 0))

    @counted
    def nvmlGpmSampleAlloc() -> Any:
        return real.c_nvmlGpmSample_t()  # pynvml's own handle type

    @counted
    def nvmlGpmSampleFree(s: Any) -> None: ...
    @counted
    def nvmlGpmSampleGet(h: int, s: Any) -> Any:
        return s

    @counted
    def nvmlGpmMetricsGet(req: Any) -> Any:
        r = rec()
        fields = {2: "sm_active_pct", 3: "sm_occupancy_pct", 5: "tensor_active_pct", 10: "dram_bw_pct"}
        for i in range(req.numMetrics):
            m = req.metrics[i]
            value = r.get(fields.get(m.metricId, ""))
            m.nvmlReturn = real.NVML_SUCCESS if value is not None else real.NVML_ERROR_NOT_SUPPORTED
            m.value = value or 0.0
        return req

    @counted
    def nvmlDeviceGetComputeRunningProcesses(h: int) -> list[Any]:
        return [types.SimpleNamespace(pid=4242, usedGpuMemory=rec()["mem_used_bytes"] - 500_000_000)]

    @counted
    def nvmlDeviceGetProcessUtilization(h: int, ts: int) -> list[Any]:
        return [
            types.SimpleNamespace(
                pid=4242, smUtil=rec()["util_gpu_pct"], memUtil=rec()["util_mem_pct"], timeStamp=int(now() * 1e6)
            )
        ]

    for name, value in list(locals().items()):
        if name.startswith("nvml"):
            setattr(nv, name, value)
    return nv
