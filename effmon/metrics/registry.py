"""The metric registry: every derived metric is one declaration, read by every presenter.

A declaration says what a metric is called (key, label, unit, which way is better), what it needs, where
it is shown and exported, and how it is computed: a small function of ``Inputs`` that returns a value or
an explicit ``NA(reason)``. The dashboard strip, ``sessions show``, the report table, the Markdown/HTML
reports, the JSON and EfficientLLM exports and ``compare`` all iterate the registry, so adding a metric
is one declaration (see ``docs/architecture.md``)::

    @metric("J_per_step", label="J/step", unit="J", better="lower", needs=("energy_j", "training"),
            json=("energy_per", "step_j"), table="known", compare=True)
    def j_per_step(x: Inputs) -> float | NA:
        if not x.training:
            return NA("no training steps in the window")
        return per(x["energy_j"], x.training.steps, "no energy reading")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from effmon.core.fmt import num

if TYPE_CHECKING:
    from effmon.metrics.stats import GpuStats, InferenceStats, ServerStats, TrainingStats


class NA:
    """No value, and why (never a zero)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"NA({self.reason!r})"


@dataclass(frozen=True)
class Known:
    """A value with facts about how it was obtained (exported beside it, e.g. MCR's bit widths)."""

    value: Any
    info: dict[str, Any] = field(default_factory=dict)


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
    fmt: str | Callable[[Any], str] = ".4g"
    json: tuple[str, ...] | None = None
    """Where it lives in the effmon JSON document (and the EfficientLLM export's ``effmon`` block)."""
    json_object: bool = False
    """Exported as ``{"value": ..., "reason": ...}`` with its facts beside the value."""
    efficientllm: str | None = None
    """Its key in the benchmark's own record, if it has one."""
    unit_doc: str | None = None
    table: TableRule = "never"
    table_label: str | None = None
    detail: str | Callable[[Any], str] = ""
    """The table's "unit / source" column: text, or a function of the summary."""
    strip: str | Callable[[Any, Any], str] | None = None
    """The dashboard strip's text: a ``str.format`` pattern, or a function of (value, summary); None: not shown."""
    compare: bool = False
    module: str = ""
    """The family module that declares it: the registry is ordered by family, then by declaration."""

    def format(self, value: Any) -> str:
        if value is None:
            return "N/A"
        return self.fmt(value) if callable(self.fmt) else num(value, self.fmt)

    def detail_text(self, summary: Any) -> str:
        return self.detail(summary) if callable(self.detail) else self.detail


METRICS: dict[str, MetricDef] = {}
"""Every metric, in the order the tables show them."""

INPUTS = ("gpus", "training", "inference", "server", "run_kind", "model", "options", "meta", "steps", "requests")


def metric(
    key: str, *, label: str, unit: str, better: Better | None, needs: tuple[str, ...], **kw: Any
) -> Callable[[Callable[[Inputs], Any]], Callable[[Inputs], Any]]:
    """Declare a metric; the decorated function computes it from ``Inputs``."""

    def register(fn: Callable[[Inputs], Any]) -> Callable[[Inputs], Any]:
        if key in METRICS:
            raise ValueError(f"metric {key!r} declared twice")
        doc = (fn.__doc__ or "").strip()
        METRICS[key] = MetricDef(
            key, label, unit, better, needs, fn, kw.pop("description", doc), module=fn.__module__, **kw
        )
        return fn

    return register


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
            self.results[key] = Result.of(METRICS[key].compute(self))
        return self.results[key]

    def __getitem__(self, key: str) -> Any:
        return self.result(key).value

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def check(families: tuple[str, ...]) -> None:
    """Once every family module is imported: order the registry by family (the order tables show), and
    check that every metric needs only inputs and declared metrics."""
    rank = {f"effmon.metrics.{f}": i for i, f in enumerate(families)}
    unknown_family = sorted({m.module for m in METRICS.values()} - set(rank))
    if unknown_family:
        raise ValueError(f"metrics declared outside the families {families}: {unknown_family}")
    ordered = sorted(enumerate(METRICS.values()), key=lambda im: (rank[im[1].module], im[0]))
    METRICS.clear()
    METRICS.update((m.key, m) for _, m in ordered)
    for m in METRICS.values():
        unknown = [n for n in m.needs if n not in INPUTS and n not in METRICS]
        if unknown:
            raise ValueError(f"metric {m.key!r} needs {unknown}, which are neither inputs nor metrics")


def compute_all(x: Inputs) -> dict[str, Result]:
    """Every registered metric, in declaration order."""
    return {key: x.result(key) for key in METRICS}


def per(total: Any, count: Any, reason: str) -> float | NA:
    """``total / count``, or N/A when either is missing or the count is zero."""
    if total is None or not count:
        return NA(reason)
    return float(total) / count
