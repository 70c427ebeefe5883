"""GPU clock and power-limit control, only on request (``effmon sweep --sm-clocks / --power-limits``).

effmon never changes a GPU setting unless one of those options is given. When it does:

- the privilege is checked first, without changing anything (the power limit set to the value it already has:
  NVML answers NO_PERMISSION to a user who may not), and the values against the GPU's own range;
- before the first change, a **recovery record** (``$EFFMON_HOME/gpu-settings.json``, 0600) says what each GPU
  had; each change is added to it before it is made;
- every exit path restores what was there: the end of the sweep, Ctrl-C and SIGTERM (the sweep stops, then the
  ``with`` block ends), an exception (the same), and ``atexit``; a SIGKILL or a power cut leaves the record,
  and ``effmon clocks --reset`` (or the next ``effmon sweep``, which refuses to start) restores from it.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Any

from effmon.core.files import safe_write
from effmon.core.paths import effmon_home

RECORD = "gpu-settings.json"


class ClockError(Exception):
    code = 2


def record_path() -> Path:
    return effmon_home() / RECORD


def _nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        raise ClockError("changing GPU clocks needs NVML: pip install nvidia-ml-py") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise ClockError(f"cannot reach the NVIDIA driver ({exc}): there is no GPU setting to change here") from None
    return pynvml


class GpuSettings:
    """Locked SM clocks and power limits of the GPUs, set on request and restored on every exit path."""

    def __init__(self, gpus: list[int] | None = None, nv: Any = None):
        self.nv = nv or _nvml()
        count = self.nv.nvmlDeviceGetCount()
        self.gpus = gpus if gpus is not None else list(range(count))
        self.handles = {i: self.nv.nvmlDeviceGetHandleByIndex(i) for i in self.gpus}
        self.before: dict[int, dict[str, Any]] = {}
        self._registered = False

    # -- checks before anything changes ------------------------------------------------------------------------
    def check(self, sm_clocks: list[int], power_limits_w: list[float]) -> None:
        """The values against each GPU's range, and the privilege to change them; ClockError says what to do."""
        nv = self.nv
        for i, h in self.handles.items():
            top = nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)
            bad = [c for c in sm_clocks if not 0 < c <= top]
            if bad:
                raise ClockError(f"--sm-clocks {bad[0]}: GPU {i} runs its SM clock up to {top} MHz")
            lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(h)
            bad_w = [w for w in power_limits_w if not lo / 1000 <= w <= hi / 1000]
            if bad_w:
                raise ClockError(f"--power-limits {bad_w[0]:g}: GPU {i} takes {lo / 1000:g} to {hi / 1000:g} W")
            try:  # a change to the value it already has: refused to a user who may not change it
                nv.nvmlDeviceSetPowerManagementLimit(h, nv.nvmlDeviceGetPowerManagementLimit(h))
            except nv.NVMLError as exc:
                if exc.value == nv.NVML_ERROR_NO_PERMISSION:
                    raise ClockError(
                        "changing GPU clocks or power limits needs root (run effmon sweep with sudo) or an "
                        "administrator; nothing was changed. Without --sm-clocks / --power-limits the sweep runs "
                        "at the clocks the GPU chooses"
                    ) from None
                raise ClockError(f"GPU {i} refused a power-limit change ({exc}); nothing was changed") from None

    # -- changes --------------------------------------------------------------------------------------------
    def _remember(self, i: int, what: str) -> None:
        nv, h = self.nv, self.handles[i]
        entry = self.before.setdefault(i, {"uuid": str(nv.nvmlDeviceGetUUID(h))})
        if what == "power_limit_mw" and what not in entry:
            entry[what] = int(nv.nvmlDeviceGetPowerManagementLimit(h))
        if what == "sm_locked" and what not in entry:
            entry[what] = True  # locked clocks are undone by a reset (NVML cannot read a lock back)
        safe_write(record_path(), json.dumps({"pid": os.getpid(), "gpus": self.before}, indent=2) + "\n")
        if not self._registered:
            atexit.register(self.restore)
            self._registered = True

    def lock_sm(self, mhz: int) -> None:
        for i, h in self.handles.items():
            self._remember(i, "sm_locked")
            self.nv.nvmlDeviceSetGpuLockedClocks(h, mhz, mhz)

    def power_limit(self, watts: float) -> None:
        for i, h in self.handles.items():
            self._remember(i, "power_limit_mw")
            self.nv.nvmlDeviceSetPowerManagementLimit(h, int(watts * 1000))

    def restore(self) -> list[str]:
        """Put back what each GPU had; the record goes once every GPU is restored. Returns what was done."""
        done = restore_from(self.nv, {i: dict(e) for i, e in self.before.items()}, self.handles)
        self.before.clear()
        return done

    def __enter__(self) -> GpuSettings:
        existing = read_record()
        if existing:
            raise ClockError(
                f"{record_path()} says a GPU setting changed by effmon (pid {existing.get('pid')}) was never put "
                "back (killed before it could): run effmon clocks --reset first"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def read_record() -> dict[str, Any] | None:
    path = record_path()
    if not path.exists():
        return None
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        why = f"{path} cannot be read ({exc}); look at it, and remove it once the GPUs are as they were"
        raise ClockError(why) from None


def restore_from(nv: Any, before: dict[Any, dict[str, Any]], handles: dict[int, Any] | None = None) -> list[str]:
    done, failed = [], []
    for key, entry in sorted(before.items()):
        i = int(key)
        h = (handles or {}).get(i) or nv.nvmlDeviceGetHandleByIndex(i)
        try:
            if entry.get("sm_locked"):
                nv.nvmlDeviceResetGpuLockedClocks(h)
                done.append(f"GPU {i}: SM clock unlocked")
            if entry.get("power_limit_mw") is not None:
                nv.nvmlDeviceSetPowerManagementLimit(h, int(entry["power_limit_mw"]))
                done.append(f"GPU {i}: power limit back to {entry['power_limit_mw'] / 1000:g} W")
        except nv.NVMLError as exc:
            failed.append(f"GPU {i}: {exc}")
    if failed:
        raise ClockError("could not restore " + "; ".join(failed) + f"; the record stays in {record_path()}")
    record_path().unlink(missing_ok=True)
    return done


def reset_from_record(nv: Any = None) -> list[str]:
    """``effmon clocks --reset``: restore what the recovery record says; [] when there is none."""
    record = read_record()
    if not record:
        return []
    return restore_from(nv or _nvml(), record.get("gpus") or {})
