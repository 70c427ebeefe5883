"""The one plugin API: every data source, built-in or third-party, registers here.

A plugin is a module (or object) with a hook implementation::

    from effmon.plugins import hookimpl, SourceSpec

    @hookimpl
    def effmon_register_sources(register):
        register(SourceSpec(name="mydev", description="...", entities=(...), factory=MySource))

and is found through the ``effmon`` entry-point group. The built-in sources register
through the very same hook (``effmon.sources.builtin``). A plugin that fails to load is
reported and skipped; it never stops effmon.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pluggy

from effmon.declare import Entity, Row

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
    extra: dict[str, Any] = field(default_factory=dict)


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
    and retries with back-off. Each channel should do one cheap thing.
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


class HookSpecs:
    @hookspec
    def effmon_register_sources(self, register: Callable[[SourceSpec], None]) -> None:
        """Register data sources by calling ``register(SourceSpec(...))``."""

    @hookspec
    def effmon_launch_env(self, env: dict[str, str]) -> None:
        """Add to the environment of a command ``effmon run`` launches (e.g. a PYTHONPATH entry that
        instruments a framework). Change ``env`` in place."""


@dataclass
class Registry:
    sources: dict[str, SourceSpec]
    load_errors: list[str]
    plugin_manager: pluggy.PluginManager | None = None

    def launch_env(self, env: dict[str, str]) -> dict[str, str]:
        """The environment for a launched command, with what every plugin adds."""
        if self.plugin_manager is not None:
            for impl in reversed(self.plugin_manager.hook.effmon_launch_env.get_hookimpls()):
                try:
                    impl.function(env=env)
                except Exception as exc:
                    self.load_errors.append(f"plugin {impl.plugin_name!r} failed in effmon_launch_env: {exc}")
        return env

    def entities(self) -> dict[str, Entity]:
        out: dict[str, Entity] = {}
        for spec in self.sources.values():
            for entity in spec.entities:
                out.setdefault(entity.name, entity)
        return out


def load_registry(*, entry_points: bool = True, extra_plugins: tuple[object, ...] = ()) -> Registry:
    """Collect every registered source: built-ins, installed plugins, then ``extra_plugins``."""
    from effmon.sources import builtin

    pm = pluggy.PluginManager("effmon")
    pm.add_hookspecs(HookSpecs)
    pm.register(builtin, name="effmon.builtin")
    errors: list[str] = []
    if entry_points:
        for ep in importlib.metadata.entry_points(group="effmon"):
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:  # a broken plugin is reported, never fatal
                errors.append(f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}")
    for plugin in extra_plugins:
        pm.register(plugin)

    sources: dict[str, SourceSpec] = {}

    def register(spec: SourceSpec) -> None:
        if spec.name in sources:
            errors.append(f"source {spec.name!r} registered twice; keeping the first")
            return
        sources[spec.name] = spec

    for impl in reversed(pm.hook.effmon_register_sources.get_hookimpls()):
        try:
            impl.function(register=register)
        except Exception as exc:
            errors.append(f"plugin {impl.plugin_name!r} failed to register sources: {type(exc).__name__}: {exc}")
    return Registry(sources, errors, pm)
