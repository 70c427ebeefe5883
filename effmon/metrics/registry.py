"""The metric registry: every derived metric is one declaration, read by every presenter.

A declaration says what a metric is called (key, label, unit, which way is better), what it needs, where
it is shown and exported, and how it is computed: a small function of ``Inputs`` that returns a value or
an explicit ``NA(reason)``. The dashboard strip, ``sessions show``, the report table, the Markdown/HTML
reports, the JSON and EfficientLLM exports and ``compare`` all iterate the registry, so adding a metric
is one declaration (see ``docs/architecture.md``)::

    @metric("J_per_step", label="J/step", unit="J", better="lower", needs=("energy_j", "training"),
            json=("energy_per", "step_j"), table="known", parent="energy_j", compare=True)
    def j_per_step(x: Inputs) -> float | NA:
        if not x.training:
            return NA("no training steps in the window")
        return per(x["energy_j"], x.training.steps, "no energy reading")
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from effmon.core.fmt import num
from effmon.core.values import NA, Known

if TYPE_CHECKING:
    from effmon.metrics.stats import GpuStats, InferenceStats, ServerStats, TrainingStats


@dataclass(frozen=True)
class Result:
    value: Any
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def of(raw: Any) -> Result:
        if isinstance(raw, NA):
            return Result(None, raw.reason)
        if isinstance(raw, Known):
            return Result(raw.value, None, raw.info)
        return Result(raw)


Better = Literal["higher", "lower"]
TableRule = Literal["always", "known", "never"]
WindowKind = Literal["window", "recent"]
"""A metric's window kind (not to be confused with ``effmon.metrics.window.Window``, a span of a session)."""

EXPORT_NAME = re.compile(r"^effmon_[a-z0-9_]+$")


@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    unit: str
    better: Better | None
    needs: tuple[str, ...]
    compute: Callable[[Inputs], Any]
    description: str
    family: str = "efficientllm"
    """The section it belongs to (efficientllm, compute, energy, hardware, or a plugin's own): the only meaning of
    "family"; the HTML report groups its energy figures by it."""
    fmt: str | Callable[[Any], str] = ".4g"
    json: tuple[str, ...] | None = None
    """Where it lives in the effmon JSON document (and the EfficientLLM export's ``effmon`` block): ``(group,)`` for
    a value of its own, ``(group, field)`` for a field of a group object. Groups are made from these paths."""
    json_object: bool = False
    """Exported as ``{"value": ..., "reason": ...}`` with its facts beside the value."""
    efficientllm: str | None = None
    """Its key in the benchmark's own record, if it has one."""
    unit_doc: str | None = None
    table: TableRule = "never"
    parent: str | None = None
    """The metric whose sub-row it is in the tables (shown indented under it): J/token under energy."""
    detail: str | Callable[[Any], str] = ""
    """The table's "unit / source" column: text, or a function of the summary."""
    strip: str | Callable[[Any, Any], str] | None = None
    """The dashboard strip's text: a ``str.format`` pattern, or a function of (value, summary); None: not shown."""
    compare: bool = False
    export: str | None = None
    """Its gauge's name on the Prometheus endpoint (``effmon_...``), the value over the session so far."""
    window: WindowKind = "window"
    """``window``: over the window a view asks for (the whole session, or the report's --since/--until);
    ``recent``: over the last seconds only (a live panel's rate), said in its label."""
    module: str = ""
    """Who declared it: the family module of effmon, or the plugin that registered it."""

    def format(self, value: Any) -> str:
        if value is None:
            return "N/A"
        return self.fmt(value) if callable(self.fmt) else num(value, self.fmt)

    def detail_text(self, summary: Any) -> str:
        return self.detail(summary) if callable(self.detail) else self.detail

    @property
    def depth(self) -> int:
        """How deep a sub-row it is (0: a row of its own)."""
        return 0 if self.parent is None else METRICS[self.parent].depth + 1

    @property
    def row_label(self) -> str:
        """Its label in a table, indented under its parent."""
        return "  " * self.depth + self.label


METRICS: dict[str, MetricDef] = {}
"""Every metric, in the order the tables show them (effmon's family modules in order, then plugins')."""

INPUTS = ("gpus", "training", "inference", "server", "run_kind", "model", "options", "meta", "steps", "requests")


class RegistryError(ValueError):
    """A declaration that breaks the registry's contract (said when it is declared, not when a report drops it)."""


def declare(key: str, compute: Callable[[Inputs], Any], *, module: str, **kw: Any) -> MetricDef:
    """Add one declaration, checked against the ones before it (see ``check_one``)."""
    if key in METRICS:
        raise RegistryError(f"metric {key!r} declared twice ({METRICS[key].module} and {module})")
    kw.setdefault("description", (compute.__doc__ or "").strip())
    try:
        m = MetricDef(key=key, compute=compute, module=module, **kw)
    except TypeError as exc:
        raise RegistryError(f"metric {key!r}: {exc}") from None
    check_one(m)
    METRICS[key] = m
    return m


def metric(
    key: str, *, label: str, unit: str, better: Better | None, needs: tuple[str, ...], **kw: Any
) -> Callable[[Callable[[Inputs], Any]], Callable[[Inputs], Any]]:
    """Declare a metric; the decorated function computes it from ``Inputs``."""

    def register(fn: Callable[[Inputs], Any]) -> Callable[[Inputs], Any]:
        declare(key, fn, module=fn.__module__, label=label, unit=unit, better=better, needs=needs, **kw)
        return fn

    return register


def check_one(m: MetricDef) -> None:
    """A declaration's own contract, against the metrics declared before it: a compared
    metric says which way is better, a sub-row's parent exists, its JSON path fits the groups made so far, its
    export name is a Prometheus name of its own."""
    where = f"metric {m.key!r} ({m.module})"
    if not m.label or not isinstance(m.needs, tuple):
        raise RegistryError(f"{where}: a label and a tuple of needs are required")
    if m.better not in ("higher", "lower", None):
        raise RegistryError(f"{where}: better must be 'higher', 'lower' or None, not {m.better!r}")
    if m.compare and m.better is None:
        raise RegistryError(f"{where} is compared (compare=True) but does not say which way is better (better=...)")
    if m.table not in ("always", "known", "never"):
        raise RegistryError(f"{where}: table must be 'always', 'known' or 'never', not {m.table!r}")
    if m.window not in ("window", "recent"):
        raise RegistryError(f"{where}: window must be 'window' or 'recent', not {m.window!r}")
    if m.parent is not None and m.parent not in METRICS:
        raise RegistryError(f"{where}: its parent {m.parent!r} is not a metric declared before it")
    if m.json is not None:
        _check_json(m, where)
    if m.export is not None:
        if not EXPORT_NAME.match(m.export):
            raise RegistryError(f"{where}: export name {m.export!r} must match {EXPORT_NAME.pattern}")
        clash = [o.key for o in METRICS.values() if o.export == m.export]
        if clash:
            raise RegistryError(f"{where}: export name {m.export!r} is already {clash[0]!r}'s")


def _check_json(m: MetricDef, where: str) -> None:
    path = m.json or ()
    if not 1 <= len(path) <= 2 or not all(isinstance(p, str) and p for p in path):
        raise RegistryError(f"{where}: json must be (group,) or (group, field), not {path!r}")
    if m.json_object and len(path) != 2:
        raise RegistryError(f"{where}: a json_object metric needs json=(group, field)")
    for other in METRICS.values():
        if other.json is None or other.json[0] != path[0]:
            continue
        if other.json == path:
            raise RegistryError(f"{where}: JSON path {path!r} is already {other.key!r}'s")
        if len(other.json) == 1 or len(path) == 1:
            raise RegistryError(
                f"{where}: JSON group {path[0]!r} holds {other.key!r}'s value, so it cannot also be an object"
            )
        if other.json_object or m.json_object:
            raise RegistryError(f"{where}: JSON group {path[0]!r} is {other.key!r}'s object; choose another group")


def check_needs() -> None:
    """Once a set of declarations is complete (effmon's families, then each plugin's): everything a metric needs
    is an input or a declared metric (a family may use a metric it declares further down)."""
    for m in METRICS.values():
        unknown = [n for n in m.needs if n not in INPUTS and n not in METRICS]
        if unknown:
            raise RegistryError(
                f"metric {m.key!r} ({m.module}) needs {unknown}, which are neither inputs {INPUTS} nor metrics"
            )


def table_order() -> list[MetricDef]:
    """Every metric in the order tables show them: declaration order, each sub-row right under its parent (a
    plugin's J/sample-like figure sits under energy, not at the table's end)."""
    children: dict[str | None, list[MetricDef]] = {}
    for m in METRICS.values():
        children.setdefault(m.parent, []).append(m)
    out: list[MetricDef] = []

    def walk(parent: str | None) -> None:
        for m in children.get(parent, []):
            out.append(m)
            walk(m.key)

    walk(None)
    return out


def json_groups() -> tuple[str, ...]:
    """The top-level groups of metric values in the documents, in the order their first metric is declared."""
    return tuple(dict.fromkeys(m.json[0] for m in METRICS.values() if m.json))


def remove(keys: list[str]) -> None:
    """Take declarations out again (a plugin's metrics when it is unregistered); a metric that another one still
    needs or has as its parent stays, and that is an error."""
    for m in METRICS.values():
        if m.key in keys:
            continue
        held = [k for k in keys if k in m.needs or k == m.parent]
        if held:
            raise RegistryError(f"cannot remove {held}: metric {m.key!r} needs them")
    for key in keys:
        METRICS.pop(key, None)


@dataclass
class Options:
    """What a user may add to a session's figures."""

    params: int | None = None
    precision: str | None = None
    perf: float | None = None
    baseline_precision: str | None = None
    baseline_perf: float | None = None
    tokens: str = "real"  # TT over real (non-padding) tokens, or "padded" positions (the benchmark reference's count)


@dataclass
class Inputs:
    """What metric functions read: typed stats of the window, and other metrics by key (``x["energy_j"]``)."""

    gpus: list[GpuStats]
    training: TrainingStats | None
    inference: InferenceStats | None
    server: ServerStats | None
    run_kind: str
    model: dict[str, Any]
    options: Options
    meta: dict[str, Any]
    notes: list[str]
    results: dict[str, Result] = field(default_factory=dict)

    def result(self, key: str) -> Result:
        if key not in self.results:
            m = METRICS[key]
            if m.module.startswith("effmon."):
                self.results[key] = Result.of(m.compute(self))
            else:  # a plugin's metric that fails is N/A with its error; it never stops a report
                try:
                    self.results[key] = Result.of(m.compute(self))
                except Exception as exc:
                    self.results[key] = Result(None, f"{m.module} failed: {type(exc).__name__}: {exc}")
        return self.results[key]

    def __getitem__(self, key: str) -> Any:
        return self.result(key).value

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def compute_all(x: Inputs) -> dict[str, Result]:
    """Every registered metric, in declaration order."""
    return {key: x.result(key) for key in METRICS}


def per(total: Any, count: Any, reason: str) -> float | NA:
    """``total / count``, or N/A when either is missing or the count is zero."""
    if total is None or not count:
        return NA(reason)
    return float(total) / count
