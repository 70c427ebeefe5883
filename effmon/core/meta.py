"""What a session says about itself: ``SessionMeta``, the known keys of its metadata, typed, and an ``extra``
dict for the rest (a plugin's own keys). The store writes each key as its own row and reads them back into this
(``SessionReader.session_meta()``); a reader names a field, never a string, and a new key is added here once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SessionMeta:
    # what the session is
    name: str | None = None
    mode: str | None = None
    """command, pid, replay, url, serve, load, sweep, top, prometheus ..."""
    kind: str | None = None
    run_kind: str | None = None
    """training, inference, node (a dcgm node) or monitoring; None: decided from what was recorded."""
    effmon_version: str | None = None
    redaction: int | None = None
    # its life
    status: str | None = None
    end_reason: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    wall_started_at: float | None = None
    wall_ended_at: float | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    detached: bool | None = None
    damaged: dict[str, Any] | None = None
    # what was run and watched
    command: list[str] | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    pid: int | None = None
    watched_pids: list[int] | None = None
    launched: dict[str, Any] | None = None
    recorder_pid: int | None = None
    output_log: str | None = None
    # the machine and the sources
    host: dict[str, Any] | None = None
    gpus: list[dict[str, Any]] | None = None
    unsupported: dict[str, str] | None = None
    sources: list[str] | None = None
    rates: dict[str, float] | None = None
    lost_gpus: dict[str, float] | None = None
    hung: dict[str, float] | None = None
    energy_integrated_j: dict[str, float] | None = None
    gpu_settings: dict[str, Any] | None = None
    # the work
    model: dict[str, Any] | None = None
    model_dir: str | None = None
    precision: str | None = None
    precision_bits: int | None = None
    quantization: dict[str, Any] | None = None
    preset: dict[str, Any] | None = None
    ranks: list[dict[str, Any]] | None = None
    job: dict[str, Any] | None = None
    merged_from: list[str] | None = None
    track_dropped_events: int | None = None
    trainer_state: str | None = None
    plan: dict[str, Any] | None = None
    """How long the run will be: ``total_steps`` and/or ``epochs`` (the Trainer's, or ``effmon.track.plan``)."""
    tensorboard: str | None = None
    # the sources' and drivers' own records
    replay: dict[str, Any] | None = None
    speed: float | None = None
    serving: dict[str, Any] | None = None
    dcgm_url: str | None = None
    prometheus: dict[str, Any] | None = None
    load: dict[str, Any] | None = None
    load_summary: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys effmon does not know (a plugin's): kept, shown in JSON, never dropped."""

    @classmethod
    def from_dict(cls, meta: dict[str, Any]) -> SessionMeta:
        known = {k: v for k, v in meta.items() if k in KNOWN}
        return cls(**known, extra={k: v for k, v in meta.items() if k not in KNOWN})

    def to_dict(self) -> dict[str, Any]:
        """The stored form: every key that has a value, the extra keys beside them."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}


KNOWN = frozenset(f.name for f in dataclasses.fields(SessionMeta)) - {"extra"}
"""The keys effmon itself writes."""
