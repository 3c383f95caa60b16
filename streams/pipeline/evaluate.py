"""Run a model version's enabled detectors on a merged window against its reference, within its false-alarm budget.

Owns which detectors run for a model version and at which level. The families a window runs are those its
configuration enables and its data supports (labels, classifier outputs, a sample). The model's false-alarm
budget (`detectors.budget.FalseAlarmBudget`, the ``false_alarm_budget`` section) sets their levels; the rule,
stated once here and in detectors/README.md ("False-alarm budget"):

- The window-level families (`WINDOW_BUDGET_KNOBS`): drift (univariate drift, prediction drift included),
  quality missing / out_of_range / unseen, multivariate mmd / pca, performance drop, estimated accuracy,
  calibration, slices. type_errors is a deterministic tolerance on a rate, not a test: it has no level and
  no share.
- ``families`` = the budgeted families built for the model version (enabled, supported by its reference,
  not set explicitly); each runs at level ``budget.per_window(window_seconds, families)`` per window: the
  family's ``alpha`` (slices: ``fdr``), within which its own multiple-testing control (BH over features,
  Bonferroni over metrics, BH over slices) holds.
- A level knob written in the configuration (pydantic ``model_fields_set``, at any level of the file) wins:
  that family runs at its own level, takes no share, and is reported once per model version as no longer
  bounded by the budget. ``false_alarm_budget.enabled: false``: every family at its own knob.
- MMD's permutation p-value is at least 1 / (1 + n_permutations): under the budget it runs only if that can
  reach the budgeted level ((1 + n_permutations) x level >= 1); otherwise it is not built (said once per model
  version) unless its alpha is set explicitly. Every other family's p-value is exact or asymptotic (scipy
  survival functions, no clamping above 0), so it can reach any level.
- The sequential detector's ``false_alarm_rate`` is ``budget.per_tick(tick_seconds)`` (`sequential_kwargs`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, cast

from driftline.detectors.budget import FalseAlarmBudget
from driftline.detectors.calibration import CalibrationDrift
from driftline.detectors.drift import UnivariateDrift
from driftline.detectors.estimated_accuracy import EstimatedAccuracy
from driftline.detectors.findings import Detector, Finding
from driftline.detectors.multivariate import MMDDrift, PCAReconstructionDrift
from driftline.detectors.performance_drop import PerformanceDrop
from driftline.detectors.quality import (
    MissingRateDetector,
    OutOfRangeDetector,
    TypeErrorDetector,
    UnseenCategoryDetector,
)
from driftline.detectors.slice_accuracy import SliceAccuracy
from driftline.detectors.summaries import WindowSummary
from driftline.streams.config.model_config import (
    WINDOW_BUDGET_KNOBS,
    Knobs,
    ResolvedModelConfig,
    explicit_budget_knobs,
    knobs_at,
)
from driftline.streams.config.settings import Settings
from driftline.streams.pipeline.ticks import tick_size_seconds

log = logging.getLogger("driftline.evaluate")

# A resolved configuration without the worker's settings (tests, tools) has no window size: the worker's default.
DEFAULT_WINDOW_SECONDS: int = Settings.model_fields["window_seconds"].default
# A level at or above 1/2 per window is no longer a budget (every family constructor needs alpha < 1).
MAX_LEVEL = 0.5

class CapabilityLog:
    """Says once per (model, version, detector) and process why a detector cannot run for a model version.

    Detectors are built again for every window and, in the merge stage, every time labels land; what a reference
    lacks does not change between those builds, so saying it once per model version is enough.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._said: set[tuple[str, str, str]] = set()

    def missing(self, config: ResolvedModelConfig, detector: str, reason: str) -> None:
        key = (config.model_id, config.model_version, detector)
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        log.warning("%s not used for %s/%s: %s (logged once per model version)", detector, config.model_id,
                    config.model_version, reason)

    def say(self, config: ResolvedModelConfig, topic: str, text: str) -> None:
        """Log `text` at INFO once per (model, version, configuration version, topic)."""
        key = (config.model_id, config.model_version, f"{topic}@{config.version}")
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        log.info("%s of %s/%s: %s", topic, config.model_id, config.model_version, text)


CAPABILITIES = CapabilityLog()


@dataclass(frozen=True)
class BudgetPlan:
    """How a model version's window-level families spend its false-alarm budget (see the module docstring).

    ``levels``: budgeted family -> its level per window; ``explicit``: family -> the level its configuration
    sets (outside the budget); ``left_out``: family -> why it is not built under the budget.
    """

    enabled: bool
    window_seconds: float
    levels: dict[str, float] = field(default_factory=dict)
    explicit: dict[str, float] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the model version's log."""
        if not self.enabled:
            return "false-alarm budget disabled: every family at its own alpha / fdr"
        parts = [f"{len(self.levels)} budgeted families at {next(iter(self.levels.values()), 0.0):.3g} per "
                 f"{self.window_seconds:g} s window"]
        parts += [f"{f} at its own {v:g}, not bounded by the budget" for f, v in self.explicit.items()]
        parts += [f"{f} not built: {why}" for f, why in self.left_out.items()]
        return "; ".join(parts)


# Family path -> detector class, in the order they run. Which ones a reference supports: `_supported`.
FAMILIES: dict[str, type] = {
    "drift": UnivariateDrift,
    "quality.missing": MissingRateDetector,
    "quality.out_of_range": OutOfRangeDetector,
    "quality.unseen": UnseenCategoryDetector,
    "quality.type_errors": TypeErrorDetector,
    "multivariate.mmd": MMDDrift,
    "multivariate.pca": PCAReconstructionDrift,
    "performance.drop": PerformanceDrop,
    "performance.estimated_accuracy": EstimatedAccuracy,
    "calibration": CalibrationDrift,
    "slices": SliceAccuracy,
}


def _knobs(config: ResolvedModelConfig, path: str) -> Knobs:
    return cast(Knobs, knobs_at(config.detectors, path))


def _supported(reference: WindowSummary, path: str) -> bool:
    if path.startswith("multivariate."):
        return len(reference.reservoir.feature_names) >= 2 and reference.reservoir.hashes.size >= 50
    if path == "performance.drop":
        return reference.classifier is not None or reference.regression is not None
    if path in ("performance.estimated_accuracy", "calibration", "slices"):
        return reference.classifier is not None
    return True


def window_seconds_of(config: ResolvedModelConfig) -> float:
    """The model version's window size; a configuration resolved without the worker's settings has the default."""
    return float(config.window_seconds if config.window_seconds is not None else DEFAULT_WINDOW_SECONDS)


def _mmd_reaches(config: ResolvedModelConfig, level: float) -> bool:
    # The permutation p-value's smallest value is 1 / (1 + n_permutations).
    return (1 + config.detectors.multivariate.mmd.n_permutations) * level >= 1


def plan_budget(config: ResolvedModelConfig, budgeted: list[str]) -> BudgetPlan:
    """The level of each of `budgeted` (enabled, supported, built) families under the model's budget."""
    section = config.false_alarm_budget
    window = window_seconds_of(config)
    if not section.enabled:
        return BudgetPlan(False, window)
    budget: FalseAlarmBudget = section.budget()
    explicit = {p.rsplit(".", 1)[0] for p in explicit_budget_knobs(config.detectors)}
    own = {p: getattr(knobs_at(config.detectors, p), WINDOW_BUDGET_KNOBS[p]) for p in budgeted if p in explicit}
    spend = [p for p in budgeted if p not in explicit]
    left_out: dict[str, str] = {}

    def level() -> float:
        return min(budget.per_window(window, len(spend)), MAX_LEVEL) if spend else 0.0

    if "multivariate.mmd" in spend and not _mmd_reaches(config, level()):
        n = config.detectors.multivariate.mmd.n_permutations
        left_out["multivariate.mmd"] = (f"its permutation p-value is at least 1/{1 + n}, above the budgeted level "
                                        f"{level():.3g}; set detectors.multivariate.mmd.alpha to run it outside "
                                        "the budget")
        spend.remove("multivariate.mmd")
    if spend and level() <= 0:
        for p in spend:
            left_out[p] = "the budget leaves the window-level families nothing (sequential_share: 1)"
        spend = []
    return BudgetPlan(True, window, {p: level() for p in spend}, own, left_out)


def _kwargs(config: ResolvedModelConfig, path: str, plan: BudgetPlan) -> dict[str, Any]:
    kwargs = _knobs(config, path).kwargs()
    if path in plan.levels:
        kwargs[WINDOW_BUDGET_KNOBS[path]] = plan.levels[path]
    return kwargs


def build_detectors(reference: WindowSummary, config: ResolvedModelConfig) -> list[Any]:
    """The model version's detectors at their budgeted levels (see the module docstring for the rule)."""
    candidates = [p for p in FAMILIES if _knobs(config, p).enabled and _supported(reference, p)]
    budgeted = [p for p in candidates if p in WINDOW_BUDGET_KNOBS]
    # A family whose constructor refuses the reference (no labels, say) is not built and takes no share, which
    # only the construction tells: build at the candidates' levels, then again if some were refused.
    while True:
        plan = plan_budget(config, budgeted)
        built: dict[str, Any] = {}
        for path in candidates:
            if path in plan.left_out:
                continue
            cls = FAMILIES[path]
            try:
                built[path] = cls(reference, **_kwargs(config, path, plan))
            except ValueError as exc:
                CAPABILITIES.missing(config, cls.__name__, str(exc))
        refused = [p for p in plan.levels if p not in built]
        if not refused:
            break
        budgeted = [p for p in budgeted if p not in refused]
        candidates = [p for p in candidates if p not in refused]
    for path, why in plan.left_out.items():
        CAPABILITIES.missing(config, FAMILIES[path].__name__, why)
    CAPABILITIES.say(config, "false-alarm budget", plan.describe())
    return list(built.values())


def sequential_kwargs(config: ResolvedModelConfig) -> dict[str, Any]:
    """`TickChangeDetector` keyword arguments: the ``sequential`` knobs, ``false_alarm_rate`` from the budget.

    The budget's `FalseAlarmBudget.per_tick` of the model's tick (`tick_size_seconds`) replaces the knob when the budget
    is enabled and the configuration does not set ``false_alarm_rate`` itself. A rate of 0 (``sequential_share:
    0``) means the sequential detection has no budget: it cannot run under it.
    """
    kwargs = config.detectors.sequential.kwargs()
    section = config.false_alarm_budget
    if section.enabled and "sequential.false_alarm_rate" not in explicit_budget_knobs(config.detectors):
        kwargs["false_alarm_rate"] = min(section.budget().per_tick(tick_size_seconds(config)), MAX_LEVEL)
    return kwargs


class ModelEvaluator:
    """The detectors of one model version, built once per (reference, configuration version)."""

    def __init__(self, reference: WindowSummary, config: ResolvedModelConfig) -> None:
        self.config = config
        self.detectors: list[Detector] = build_detectors(reference, config)

    def evaluate(self, summary: WindowSummary) -> list[Finding]:
        findings: list[Finding] = []
        for detector in self.detectors:
            try:
                findings += detector.update(summary)
            except (ValueError, ArithmeticError) as exc:
                log.error("%s failed on a window of %s: %s", type(detector).__name__, self.config.model_id, exc)
        return findings
