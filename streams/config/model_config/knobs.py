"""Detector knobs derived from the detector classes' constructors, the one place a knob's default is written.

This module owns the ``detectors`` section of the configuration. Each knob model takes its names, defaults,
order and types from a constructor's signature. `SECTIONS` says where each detector class sits in the file
and what a signature cannot say: ranges, descriptions, a narrower type, and checks that span several knobs.
So when a constructor parameter is added, renamed or gets a new default, the configuration follows without
a second edit. A bound left behind by a renamed parameter is an error at import, not a silently lost check.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo

from driftline.detectors import (
    calibration,
    drift,
    estimated_accuracy,
    multivariate,
    performance_drop,
    quality,
    sequential,
    slice_accuracy,
)

TickMethod = Literal["cusum", "page_hinkley", "adwin", "ddm", "eddm", "hddm_a", "hddm_w"]


class Strict(BaseModel):
    """Base of every configuration model: unknown keys, NaN and infinities are errors; values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Knobs(Strict):
    """One detector class's knobs: its constructor's keyword arguments, plus ``enabled``."""

    # A constructor default that breaks its own bounds fails at import rather than in a running worker.
    model_config = ConfigDict(validate_default=True)

    enabled: bool = True

    def kwargs(self) -> dict[str, Any]:
        """The detector's constructor keyword arguments (everything but ``enabled``)."""
        return self.model_dump(exclude={"enabled"})


class Section(NamedTuple):
    """Where a detector class's knobs sit and what its constructor's signature cannot say about them."""

    model: str  # class name of the knob model
    detector: Callable[..., Any]  # whose constructor the knobs are
    # parameter -> `Field` constraints added to the signature's type, or an ``Annotated`` type replacing it
    bounds: Mapping[str, Any]
    skip: tuple[str, ...] = ()  # parameters that are not the model's to set (besides ``reference``: the data)
    check: Callable[[Any], Any] | None = None  # validates the knobs together; returns them or raises ValueError


def _distinct(value: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(value)) != len(value):
        raise ValueError("methods must not repeat")
    return value


def _can_reject(knobs: Any) -> Any:
    # The permutation p-value is at least 1 / (1 + n_permutations): below that the test never fires.
    if (1 + knobs.n_permutations) * knobs.alpha < 1:
        need = math.ceil(1 / knobs.alpha) - 1
        raise ValueError(f"n_permutations must be >= {need} for a p-value to reach alpha={knobs.alpha}")
    return knobs


Alpha = Field(gt=0, lt=1, description="Significance level of the window's test.")
_UNIT = Field(gt=0, lt=1)
_COUNT = Field(ge=1)
_MARGIN = Field(ge=0, lt=1)
_RATE = {"alpha": _UNIT, "min_count": _COUNT}

SECTIONS: dict[str, Section] = {
    "drift": Section("DriftKnobs", drift.UnivariateDrift, {
        "alpha": Alpha, "psi_floor": Field(ge=0), "js_floor": Field(ge=0, le=1), "min_samples": _COUNT,
        "eps": _UNIT,
    }),
    "quality.missing": Section("RateKnobs", quality.MissingRateDetector, _RATE),
    "quality.out_of_range": Section("RateKnobs", quality.OutOfRangeDetector, _RATE),
    "quality.unseen": Section("UnseenKnobs", quality.UnseenCategoryDetector, {**_RATE, "top": _COUNT}),
    "quality.type_errors": Section("TypeErrorKnobs", quality.TypeErrorDetector, {"tolerance": Field(ge=0, le=1)}),
    # The device is the worker's choice, not the model's.
    "multivariate.mmd": Section("MMDKnobs", multivariate.MMDDrift, {
        "alpha": Alpha, "n_permutations": _COUNT, "min_samples": Field(ge=2),
    }, skip=("device",), check=_can_reject),
    "multivariate.pca": Section("PCAKnobs", multivariate.PCAReconstructionDrift, {
        "alpha": Alpha, "variance": Field(gt=0, le=1), "min_samples": Field(ge=2), "n_folds": Field(ge=2),
    }),
    # The constructor takes any sequence of names and rejects unknown ones when called; the file is checked
    # at load time instead, so a typo names its key.
    "sequential": Section("SequentialKnobs", sequential.TickChangeDetector, {
        "false_alarm_rate": Field(gt=0, lt=1, description="Expected false alarms per tick, whole detector."),
        "k": Field(ge=0), "warmup_ticks": Field(ge=0), "min_count": _COUNT,
        "methods": Annotated[tuple[TickMethod, ...], Field(min_length=1), AfterValidator(_distinct)],
        "reference_share": Field(gt=0, le=1, description="Largest share of the reference's events one tick's "
                                                         "z may weigh (the reference's own error)."),
    }),
    "performance.drop": Section("DropKnobs", performance_drop.PerformanceDrop, {
        "alpha": Alpha, "margin": _MARGIN, "rmse_margin": Field(ge=0), "min_labeled": _COUNT,
        "min_per_class": _COUNT,
    }),
    "performance.estimated_accuracy": Section("EstimatedAccuracyKnobs", estimated_accuracy.EstimatedAccuracy, {
        "alpha": Alpha, "margin": _MARGIN, "min_count": _COUNT, "level": _UNIT,
    }),
    "calibration": Section("CalibrationKnobs", calibration.CalibrationDrift, {
        "alpha": Alpha, "min_labeled": _COUNT, "min_expected": Field(gt=0),
    }),
    "slices": Section("SliceKnobs", slice_accuracy.SliceAccuracy, {
        "fdr": _UNIT, "margin": _MARGIN, "min_support": _COUNT, "k_worst": Field(ge=0), "level": _UNIT,
    }),
}

# The knob of each family that the model's false-alarm budget (`schema.FalseAlarmBudgetConfig`) sets unless the
# model's configuration sets it explicitly: the window-level families' level per window, and the sequential
# detector's expected false alarms per tick. type_errors is a deterministic tolerance, not a test: no level.
WINDOW_BUDGET_KNOBS: dict[str, str] = {
    "drift": "alpha",
    "quality.missing": "alpha",
    "quality.out_of_range": "alpha",
    "quality.unseen": "alpha",
    "multivariate.mmd": "alpha",
    "multivariate.pca": "alpha",
    "performance.drop": "alpha",
    "performance.estimated_accuracy": "alpha",
    "calibration": "alpha",
    "slices": "fdr",
}
BUDGET_KNOBS: dict[str, str] = {**WINDOW_BUDGET_KNOBS, "sequential": "false_alarm_rate"}

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def knob_model(section: Section, *alike: Callable[..., Any]) -> type[Knobs]:
    """The knob model of `section.detector`, read from its constructor's signature at this call.

    `alike` names, in the model's docstring, other classes that take the same knobs.
    """
    detector = section.detector
    fields: dict[str, Any] = {}
    # eval_str: the detector modules use postponed annotations, and pydantic needs the types themselves.
    for param in inspect.signature(detector, eval_str=True).parameters.values():
        if param.name in ("reference", *section.skip) or param.kind in _VARIADIC:
            continue
        if param.default is param.empty or param.annotation is param.empty:
            raise TypeError(f"{detector.__qualname__}: knob {param.name!r} needs a type and a default")
        rule = section.bounds.get(param.name, param.annotation)
        if isinstance(rule, FieldInfo):
            rule = Annotated[param.annotation, rule]
        fields[param.name] = (rule, param.default)
    if stale := sorted(set(section.bounds) - set(fields)):
        raise TypeError(f"{detector.__qualname__} has no knob {stale} that SECTIONS bounds")
    validators = {"_check": model_validator(mode="after")(section.check)} if section.check else None
    doc = " and ".join(f"`{d.__module__}.{d.__qualname__}`" for d in (detector, *alike))
    if section.skip:
        doc += f" (not set per model: {', '.join(section.skip)})"
    return create_model(
        section.model, __base__=Knobs, __doc__=doc + ".", __module__=__name__, __validators__=validators, **fields
    )


def detectors_model(sections: Mapping[str, Section]) -> type[Strict]:
    """The ``detectors`` section: one field per family, a nested model for families of several classes."""
    def key(section: Section) -> tuple[Any, str, int]:
        # Classes that inherit one constructor under one name and one bounds table (missing and out-of-range
        # rates) share one model, so either section accepts the other's knobs.
        return section.detector.__init__, section.model, id(section.bounds)

    shared: dict[tuple[Any, str, int], type[Knobs]] = {}
    tree: dict[str, Any] = {}
    for path, section in sections.items():
        if key(section) not in shared:
            alike = [s.detector for s in sections.values() if key(s) == key(section) and s is not section]
            shared[key(section)] = knob_model(section, *alike)
        *groups, leaf = path.split(".")
        node = tree
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = shared[key(section)]
    return _group("DetectorsConfig", tree)


def _group(name: str, members: Mapping[str, Any]) -> type[Strict]:
    fields: dict[str, Any] = {}
    for key, member in members.items():
        model = _group(f"{key.capitalize()}Config", member) if isinstance(member, Mapping) else member
        fields[key] = (model, model())
    return create_model(name, __base__=Strict, __module__=__name__, **fields)


DetectorsConfig = detectors_model(SECTIONS)


def knobs_at(detectors: Strict, path: str) -> Strict:
    """The knobs of the section at dotted `path` (e.g. ``"quality.missing"``) of a ``detectors`` section."""
    node: Any = detectors
    for part in path.split("."):
        node = getattr(node, part)
    return node


def explicit_budget_knobs(detectors: Strict) -> set[str]:
    """Paths (``"drift.alpha"``) of the `BUDGET_KNOBS` the configuration sets itself, so the budget leaves them.

    A knob counts as set when its key was written, at any level of the file (defaults, model or version):
    pydantic's ``model_fields_set`` of its section, which an unwritten section's default instance leaves empty.
    """
    return {f"{path}.{knob}" for path, knob in BUDGET_KNOBS.items()
            if knob in knobs_at(detectors, path).model_fields_set}


def _section(path: str) -> type[Strict]:
    return type(knobs_at(DetectorsConfig(), path))


# A budgeted knob renamed in its constructor fails at import, not as a budget silently no longer applied.
if stale_budget := sorted(f"{p}.{k}" for p, k in BUDGET_KNOBS.items() if k not in _section(p).model_fields):
    raise TypeError(f"BUDGET_KNOBS names knobs no detector has: {stale_budget}")


DriftKnobs = _section("drift")
QualityConfig = _section("quality")
RateKnobs = _section("quality.missing")
UnseenKnobs = _section("quality.unseen")
TypeErrorKnobs = _section("quality.type_errors")
MultivariateConfig = _section("multivariate")
MMDKnobs = _section("multivariate.mmd")
PCAKnobs = _section("multivariate.pca")
SequentialKnobs = _section("sequential")
PerformanceConfig = _section("performance")
DropKnobs = _section("performance.drop")
EstimatedAccuracyKnobs = _section("performance.estimated_accuracy")
CalibrationKnobs = _section("calibration")
SliceKnobs = _section("slices")
