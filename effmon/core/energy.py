"""Energy: power integrated between counter reads, checked against the hardware counter.

The NVML energy counter costs ≈3 ms a call, so it is read rarely; power (≈2 µs) is read
every tick. Each GPU's power is integrated with the trapezoid rule over the actual sample
times. Both start at the first counter read, so at every counter read the session holds
the counter delta and the integral over the same interval, and each checks the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from effmon.core.declare import Row


@dataclass
class _GpuEnergy:
    last_t: float | None = None
    last_p: float | None = None
    integral_j: float = 0.0
    started: bool = False
    first_counter_j: float | None = None


class EnergyIntegrator:
    def __init__(self) -> None:
        self.gpus: dict[int, _GpuEnergy] = {}

    def feed(self, rows: list[Row]) -> None:
        """Integrate ``gpu`` rows' power; complete ``gpu_energy`` rows in place."""
        for row in rows:
            if row.entity == "gpu":
                self._power(row)
            elif row.entity == "gpu_energy":
                self._counter(row)

    def _power(self, row: Row) -> None:
        v = row.values
        p, t = v.get("power_w"), v["t"]
        if p is None:
            return
        state = self.gpus.setdefault(int(v["gpu"]), _GpuEnergy())
        if state.started and state.last_t is not None and state.last_p is not None and t > state.last_t:
            state.integral_j += (p + state.last_p) / 2.0 * (t - state.last_t)
        state.last_t, state.last_p = t, p

    def _counter(self, row: Row) -> None:
        v = row.values
        state = self.gpus.setdefault(int(v["gpu"]), _GpuEnergy())
        if not state.started:
            state.started = True
            state.integral_j = 0.0
        counter = v.get("energy_counter_j")
        if counter is not None and state.first_counter_j is None:
            state.first_counter_j = counter
        v["energy_integrated_j"] = state.integral_j
        v["energy_counter_delta_j"] = (
            counter - state.first_counter_j if counter is not None and state.first_counter_j is not None else None
        )

    def totals(self) -> dict[int, float]:
        return {gpu: s.integral_j for gpu, s in self.gpus.items()}
