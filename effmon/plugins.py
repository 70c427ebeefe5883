"""The one plugin API: every data source, built-in or third-party, registers here.

A plugin is a module (or object) with a hook implementation::

    from effmon.plugins import hookimpl, SourceSpec

    @hookimpl
    def effmon_register_sources(register):
        register(SourceSpec(name="mydev", description="...", entities=(...), factory=MySource))

and is found through the ``effmon`` entry-point group. The built-in sources register
through the very same hook (``effmon.sources.builtin``). A plugin that fails to load is
reported and skipped; it never stops effmon.

A plugin adds a derived metric the same way (``effmon_register_metrics``), declared as effmon's own are
(``effmon/metrics/registry.py``), and it appears in every table, export, ``compare`` and the exporter::

    from effmon.plugins import NA, hookimpl

    def tokens_per_watt(x):
        "Generated tokens per second per watt."
        it, aec = x["IT"], x["AEC"]
        return it / aec if it and aec else NA("needs IT and AEC")

    @hookimpl
    def effmon_register_metrics(register):
        register("tokens_per_watt", tokens_per_watt, label="tokens/s/W", unit="tokens/s/W", better="higher",
                 needs=("IT", "AEC"), json=("efficiency", "tokens_per_s_per_w"), table="known", compare=True,
                 export="effmon_tokens_per_second_per_watt")
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from effmon.core.declare import Entity, M, Metric, Row
from effmon.core.source import (
    EngineSpec,
    Source,
    SourceInfo,
    SourceOptions,
    SourceSpec,
    SourceUnavailable,
    hookimpl,
    hookspec,
)
from effmon.core.values import NA, Known

__all__ = [
    "NA",
    "EngineSpec",
    "Entity",
    "Known",
    "M",
    "Metric",
    "Registry",
    "Row",
    "Source",
    "SourceInfo",
    "SourceOptions",
    "SourceSpec",
    "SourceUnavailable",
    "hookimpl",
    "load_registry",
]


class HookSpecs:
    @hookspec
    def effmon_register_sources(self, register: Callable[[SourceSpec], None]) -> None:
        """Register data sources by calling ``register(SourceSpec(...))``."""

    @hookspec
    def effmon_register_engines(self, register: Callable[[EngineSpec], None]) -> None:
        """Register serving engines by calling ``register(EngineSpec(...))``."""

    @hookspec
    def effmon_register_metrics(self, register: Callable[..., None]) -> None:
        """Declare derived metrics by calling ``register(key, compute, label=..., unit=..., better=..., needs=...,
        ...)`` with the fields of a metric declaration (``effmon.metrics.registry.MetricDef``). ``compute`` gets the
        window's inputs and returns a value or ``NA(reason)``."""

    @hookspec
    def effmon_launch_env(self, env: dict[str, str]) -> None:
        """Add to the environment of a command ``effmon run`` launches (e.g. a PYTHONPATH entry that
        instruments a framework). Change ``env`` in place."""

    @hookspec
    def effmon_attach_notes(self, pid: int, cmdline: list[str], cwd: str | None) -> list[str] | None:
        """Lines for ``effmon attach`` / ``record --pid`` about what this plugin can read of a process effmon did
        not start (e.g. a Trainer's own state files), or None."""


@dataclass
class Registry:
    sources: dict[str, SourceSpec]
    load_errors: list[str]
    plugin_manager: pluggy.PluginManager | None = None
    engines: dict[str, EngineSpec] = field(default_factory=dict)

    def launch_env(self, env: dict[str, str]) -> dict[str, str]:
        """The environment for a launched command, with what every plugin adds."""
        if self.plugin_manager is not None:
            for impl in reversed(self.plugin_manager.hook.effmon_launch_env.get_hookimpls()):
                try:
                    impl.function(env=env)
                except Exception as exc:
                    self.load_errors.append(f"plugin {impl.plugin_name!r} failed in effmon_launch_env: {exc}")
        return env

    def attach_notes(self, pid: int, cmdline: list[str], cwd: str | None) -> list[str]:
        out: list[str] = []
        if self.plugin_manager is not None:
            for impl in self.plugin_manager.hook.effmon_attach_notes.get_hookimpls():
                try:
                    lines: Any = impl.function(pid=pid, cmdline=cmdline, cwd=cwd) or []
                    out += [str(x) for x in lines]
                except Exception as exc:
                    self.load_errors.append(f"plugin {impl.plugin_name!r} failed in effmon_attach_notes: {exc}")
        return out

    def live_sources(self) -> list[str]:
        return [name for name, spec in self.sources.items() if spec.live]

    def with_role(self, role: str) -> list[str]:
        return [name for name, spec in self.sources.items() if spec.role == role]

    def entities(self) -> dict[str, Entity]:
        out: dict[str, Entity] = {}
        for spec in self.sources.values():
            for entity in spec.entities:
                out.setdefault(entity.name, entity)
        return out


@functools.cache
def _entry_points() -> tuple[tuple[tuple[str, object], ...], tuple[str, ...]]:
    plugins: list[tuple[str, object]] = []
    errors: list[str] = []
    for ep in importlib.metadata.entry_points(group="effmon"):
        try:
            plugins.append((ep.name, ep.load()))
        except Exception as exc:  # a broken plugin is reported, never fatal
            errors.append(f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}")
    return tuple(plugins), tuple(errors)


def entry_point_plugins() -> tuple[list[tuple[str, object]], list[str]]:
    """The installed plugins (the ``effmon`` entry-point group), loaded once per process, and the ones that failed."""
    plugins, errors = _entry_points()
    return list(plugins), list(errors)


def load_registry(*, entry_points: bool = True, extra_plugins: tuple[object, ...] = ()) -> Registry:
    """Collect every registered source: built-ins, installed plugins, then ``extra_plugins``."""
    from effmon.sources import builtin

    pm = pluggy.PluginManager("effmon")
    pm.add_hookspecs(HookSpecs)
    pm.register(builtin, name="effmon.builtin")
    errors: list[str] = []
    if entry_points:
        plugins, load_errors = entry_point_plugins()
        errors += load_errors
        for name, plugin in plugins:
            pm.register(plugin, name=name)
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
    engines: dict[str, EngineSpec] = {}
    for impl in reversed(pm.hook.effmon_register_engines.get_hookimpls()):
        try:
            impl.function(register=lambda spec: engines.setdefault(spec.name, spec))
        except Exception as exc:
            errors.append(f"plugin {impl.plugin_name!r} failed to register engines: {type(exc).__name__}: {exc}")
    return Registry(sources, errors, pm, engines)
