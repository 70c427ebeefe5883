"""How far a run has gone and how long it has left: steps (or requests) done of the planned total, epoch,
elapsed time and time left from the recent rate. One model, shown by the dashboard's header, the headless
progress display, ``effmon sessions`` for a live session and the load generator.

Time left is the work remaining over the *recent* rate (the last ``RECENT_STEPS`` units, at most
``RECENT_S`` seconds back, between their ends: data loading, logging and evaluation between steps count),
less the time since the last unit ended. The whole-run rate would include start-up (model load, compile,
warm-up) and stay wrong for minutes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from effmon.core.fmt import human_duration

if TYPE_CHECKING:
    from effmon.core.store import SessionReader

RECENT_STEPS = 20
RECENT_S = 120.0


@dataclass(frozen=True)
class Progress:
    done: int
    """Units finished: the last step number (a Trainer counts from 1), or requests answered."""
    total: int | None
    elapsed_s: float
    rate_per_s: float | None
    """Units per second over the recent ones (None: fewer than two yet)."""
    left_s: float | None
    """Seconds left at the recent rate (None: no total, or no rate yet)."""
    epoch: float | None = None
    epochs: float | None = None
    unit: str = "step"
    finished: bool = False
    """The run has ended (nothing is left, whatever the plan said)."""

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None

    def count_text(self) -> str:
        """``step 120/300 (40%)``"""
        text = f"{self.unit} {self.done:,}" + (f"/{self.total:,}" if self.total else "")
        return text + (f" ({self.fraction:.0%})" if self.fraction is not None else "")

    def left_text(self) -> str:
        """``4m40s left``; empty when there is nothing to say (finished, or no plan)."""
        if self.finished:
            return ""
        if self.left_s is not None:
            return f"{human_duration(self.left_s)} left"
        if self.total:
            return "time left after a few more " + self.unit + "s"
        return ""

    def epoch_text(self) -> str:
        if self.epoch is None:
            return ""
        return f"epoch {self.epoch:.2f}" + (f"/{self.epochs:g}" if self.epochs else "")

    def short(self) -> str:
        """``120/300 steps, 4m40s left``: for a table cell."""
        text = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}s"
        return text + (f", {human_duration(self.left_s)} left" if self.left_s is not None else "")

    def to_json(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "done": self.done,
            "total": self.total,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "elapsed_s": self.elapsed_s,
            "rate_per_s": self.rate_per_s,
            "left_s": self.left_s,
        }

    def line(self) -> str:
        """``step 120/300 (40%) · epoch 1.20/3 · 3m10s elapsed · 4m40s left``"""
        parts = [self.count_text(), self.epoch_text(), f"{human_duration(self.elapsed_s)} elapsed", self.left_text()]
        if not self.total and self.rate_per_s is not None and not self.finished:
            parts.append(f"{self.rate_per_s:.3g} {self.unit}s/s")
        return " · ".join(p for p in parts if p)


def progress(
    ends: Sequence[tuple[float, int]],
    *,
    started_at: float,
    now: float,
    total: int | None = None,
    epoch: float | None = None,
    epochs: float | None = None,
    unit: str = "step",
    finished: bool = False,
) -> Progress:
    """``ends``: (end time, unit number) of the units so far, in order (a step's number, or a running count of
    requests). ``started_at``: when the run began; ``now``: the time it is (the session's last reading when it
    is not live)."""
    done = ends[-1][1] if ends else 0
    rate = _recent_rate(ends)
    left = None
    finished = finished or bool(total and done >= total)
    if total and rate and not finished:
        since_last = max(0.0, now - ends[-1][0])
        left = max(0.0, (total - done) / rate - since_last)
    return Progress(
        done=done,
        total=total,
        elapsed_s=max(0.0, now - started_at),
        rate_per_s=rate,
        left_s=left,
        epoch=epoch,
        epochs=epochs,
        unit=unit,
        finished=finished,
    )


def _recent_rate(ends: Sequence[tuple[float, int]]) -> float | None:
    if len(ends) < 2:
        return None
    last_t, last_n = ends[-1]
    first = max(0, len(ends) - 1 - RECENT_STEPS)
    while first < len(ends) - 2 and last_t - ends[first][0] > RECENT_S:
        first += 1
    t0, n0 = ends[first]
    if last_t <= t0 or last_n <= n0:
        return None
    return (last_n - n0) / (last_t - t0)


def session_progress(reader: SessionReader, at: float | None = None) -> Progress | None:
    """The training progress of a session (live or finished) at time ``at`` (default: its last reading), from
    its steps (the lowest rank's: every rank takes the same steps) and its plan. None: no steps yet."""
    meta = reader.session_meta()
    lo, hi = reader.time_range()
    now = hi if at is None else at
    if now is None:
        return None
    ends, epoch = _step_ends(reader, now)
    if not ends:
        return None
    plan = meta.plan or {}
    started = meta.started_at if meta.started_at is not None else lo
    total = plan.get("total_steps")
    return progress(
        ends,
        started_at=float(started if started is not None else ends[0][0]),
        now=float(now),
        total=int(total) if total else None,
        epoch=float(epoch) if epoch is not None else None,
        epochs=plan.get("epochs"),
        finished=(meta.status or "recording") != "recording" and at is None,
    )


def _step_ends(reader: SessionReader, now: float) -> tuple[list[tuple[float, int]], float | None]:
    """(end, step) of the last steps of the lowest rank, and the last epoch; a job effmon attached to: its logged
    steps as they were read (their own logs hold no step times, so the rate is that of the reads)."""
    rows = reader.last_spans("train_step", 4 * (RECENT_STEPS + 1), before=now)
    ends: list[tuple[float, int]] = []
    epoch = None
    if rows:
        rank = min(int(r.get("rank") or 0) for r in rows)
        for r in rows:
            if int(r.get("rank") or 0) == rank and r.get("step") is not None:
                ends.append((float(r["t_end"]), int(r["step"])))
                epoch = r.get("epoch") if r.get("epoch") is not None else epoch
        return ends, epoch
    if not reader.has_rows("train_log"):
        return [], None
    logged = sorted((r for r in reader.rows("train_log") if r["t"] <= now and r.get("step") is not None),
                    key=lambda r: r["step"])  # fmt: skip
    by_read: dict[float, int] = {}  # one point per read: a history read at once is no rate
    for r in logged:
        by_read[float(r["t"])] = max(int(r["step"]), by_read.get(float(r["t"]), 0))
        epoch = r.get("epoch") if r.get("epoch") is not None else epoch
    return sorted(by_read.items())[-4 * (RECENT_STEPS + 1) :], epoch
