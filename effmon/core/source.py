"""What a data source and a serving engine are: the plain types of the plugin API.

The registry that collects them (pluggy hooks, entry points) is ``effmon.plugins``, which re-exports
these for plugin authors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pluggy

from effmon.core.declare import Entity, Row

hookspec = pluggy.HookspecMarker("effmon")
hookimpl = pluggy.HookimplMarker("effmon")


class SourceUnavailable(Exception):
    """Raised by ``Source.open`` when the source cannot run here (no driver, no GPU...).

    The message is shown to the user as a one-line notice; recording goes on without it.
    """


@dataclass
class SourceOptions:
    """What a source may need to know about the recording it serves."""

    tick_s: float = 0.1
    """Interval of the every-tick channels (default 10 Hz)."""
    slow_s: float = 1.0
    """Interval of expensive channels (energy counter, per-process utilisation)."""
    host_s: float = 1.0
    watched_pids: Callable[[], list[int]] = lambda: []
    replay_path: str | None = None
    track_dir: str | None = None
    """Where the launched job's effmon.track files go (``effmon run`` sets it once the session exists)."""
    busiest: int = 0
    """How many of the busiest processes the host source records (``effmon top``, where nothing is watched)."""
    dcgm_url: str | None = None
    """A node's dcgm-exporter /metrics (``attach --dcgm``)."""
    metrics_url: str | None = None
    """A serving engine's /metrics (``attach --url``, ``serve``, ``sweep``)."""
    window_s: float = 60.0
    """The window of the serving engine's latency percentiles."""
    wait_for_server: bool = False
    """The server is not up yet when the source opens (``effmon serve``): reads fail until it is."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else, for a third-party source."""


@dataclass
class SourceInfo:
    """What a source found when it opened: kept in the session's metadata."""

    gpus: list[dict[str, Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)
    """metric (``entity.name``) -> why it reads N/A on this machine."""
    meta: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    """A running data source. ``channels`` maps a channel name to its interval in seconds.

    The sampler calls ``read(channel, now)`` when a channel is due; it returns rows that
    carry their own time stamps. ``read`` may raise: the sampler marks the channel failed
    and retries with back-off. Each channel should do one cheap thing. Two row kinds are not
    stored as samples: ``Row("meta", {...})`` adds to the session's metadata and
    ``Row("notice", {"level": "error", "text": ...})`` tells the user something mid-session.
    """

    name: str
    channels: dict[str, float]

    def open(self) -> SourceInfo: ...

    def read(self, channel: str, now: float) -> list[Row]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceSpec:
    name: str
    description: str
    entities: tuple[Entity, ...]
    factory: Callable[[SourceOptions], Source]
    live: bool = True
    """True: used by default when recording this machine. Replay-like sources say False."""
    role: str = ""
    """What else the source is for: ``"server_metrics"`` reads an inference server's metrics endpoint
    (``effmon attach --url``, ``effmon serve``); the core asks for a role, never for a plugin's name."""


@dataclass(frozen=True)
class EngineSpec:
    """A serving engine ``effmon serve`` can launch from a preset (``[serve] engine = NAME``)."""

    name: str
    description: str
    command: Callable[[dict[str, Any], str | None], list[str]]
    """(the preset's fields, a prepared local model folder or None) -> the server's argv."""
    available: Callable[[], bool]
    install_hint: str
    """One line: how to install the engine when ``available()`` is false."""
    diagnoses: tuple[tuple[tuple[str, ...], str], ...] = ()
    """(log needles, advice) pairs that explain why the server died."""
    metrics: bool = False
    """The server has a metrics endpoint that a ``server_metrics`` source reads."""
    prepare: Callable[[dict[str, Any], bool], str | None] | None = None
    """(fields, build) -> the local model folder the preset names (e.g. the tiny random model), made offline
    when ``build`` is true; None when the preset names no such folder."""
