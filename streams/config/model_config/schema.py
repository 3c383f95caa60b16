"""The pydantic models of one model's monitoring configuration and of the file, and its content-hash version.

Owns every key of the file except the detector knobs (`streams.model_config.knobs` derives those from the
detector classes). Why a content hash as the version: every ``windows`` row and finding records the
configuration it was computed with, and a hash of the canonical (validated, defaults filled, keys sorted)
JSON changes exactly when a number that can change a result changes, never for comments, key order or a
default written out.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from driftline.detectors.budget import FalseAlarmBudget
from driftline.streams.config.model_config.knobs import (
    BUDGET_KNOBS,
    DetectorsConfig,
    Strict,
    explicit_budget_knobs,
)

FeatureType = Literal["numeric", "categorical", "ignore"]


class ReferenceConfig(Strict):
    """Where the reference comes from; ``n_bins`` / ``max_categories`` go to `ReferenceProfile.fit`."""

    source: Literal["auto", "stored"] = "auto"
    windows: int = Field(default=5, ge=1, le=10_000, description="auto: the model version's first K windows.")
    inherit: bool = Field(default=False, description="A new model version starts from the previous one's.")
    n_bins: int = Field(default=50, ge=1)
    max_categories: int = Field(default=1000, ge=1)


class SummaryConfig(Strict):
    """`WindowSummary.empty` sizes (changing one takes effect from the next window opened)."""

    reservoir_size: int = Field(default=512, ge=2)
    max_slices: int = Field(default=2000, ge=1)
    score_bins: int = Field(default=100, ge=1)
    cal_bins: int = Field(default=15, ge=1)
    max_features: int = Field(default=250, ge=1)


class FalseAlarmBudgetConfig(Strict):
    """The model's false-alarm budget (`detectors.budget.FalseAlarmBudget`), spent by `streams.pipeline.evaluate`.

    Enabled, it sets every window-level family's level (``alpha``; slices: ``fdr``) and the sequential
    detector's ``false_alarm_rate``, except those the configuration sets itself; disabled, every family runs
    at its own knob.
    """

    enabled: bool = Field(default=True, description="False: every detector family at its own alpha / fdr.")
    alarms: float = Field(default=1.0, gt=0, description="Expected false alarms per model in `days` of stationary "
                                                         "traffic.")
    days: float = Field(default=30.0, gt=0, description="The period the budget is stated over.")
    sequential_share: float = Field(default=0.5, ge=0, le=1, description="Part spent on the sequential detectors.")

    def budget(self) -> FalseAlarmBudget:
        """The budget as `detectors.budget.FalseAlarmBudget` (whether or not it is enabled)."""
        return FalseAlarmBudget(alarms=self.alarms, days=self.days, sequential_share=self.sequential_share)


PolicyAction = Literal["alert", "retrain", "rollback"]
# The longest streak a policy may ask for; the policy engine keeps twice as many windows per model version,
# so a streak with unjudged windows interleaved still fits.
STREAK_LIMIT = 32


class AlertPolicy(Strict):
    """When breaches of matching rows become an incident and what it triggers (`streams.actions.engine`).

    A row matches when its metric matches a ``metrics`` glob, its feature a ``features`` glob and its slice a
    ``slices`` glob (fnmatch, case-sensitive; a row that is not about a feature or a slice has an empty one,
    which only a glob like ``*`` matches; see `streams.actions.policies`).
    """

    name: str = Field(min_length=1)
    metrics: tuple[str, ...] = Field(default=("*",), min_length=1, description="fnmatch globs on metric names.")
    features: tuple[str, ...] = Field(default=("*",), min_length=1, description="fnmatch globs on feature names.")
    slices: tuple[str, ...] = Field(default=("*",), min_length=1, description="fnmatch globs on slice names.")
    min_consecutive_breaches: int = Field(default=1, ge=1, le=STREAK_LIMIT)
    resolve_after_windows: int = Field(
        default=2, ge=1, le=STREAK_LIMIT, description="Healthy windows in a row that close an open incident."
    )
    cooldown_seconds: float = Field(default=600.0, ge=0)
    cooldowns: dict[PolicyAction, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="Per-action override of cooldown_seconds (event time)."
    )
    severity: Literal["critical", "error", "warning", "info"] = "warning"
    actions: tuple[PolicyAction, ...] = Field(default=("alert",), min_length=1)

    @field_validator("actions")
    @classmethod
    def _unique_actions(cls, value: tuple[PolicyAction, ...]) -> tuple[PolicyAction, ...]:
        if len(set(value)) != len(value):
            raise ValueError("actions must not repeat")
        return value

    @model_validator(mode="after")
    def _cooldowns_of_taken_actions(self) -> AlertPolicy:
        # A cooldown for an action the policy never takes is a typo or a leftover: it would silently do nothing.
        if stray := sorted(set(self.cooldowns) - set(self.actions)):
            taken = list(self.actions)
            raise ValueError(f"cooldowns names actions the policy does not take: {stray} (actions: {taken})")
        return self

    def cooldown(self, action: PolicyAction) -> float:
        """Seconds (event time) an action stays unused after it was used: its override, else ``cooldown_seconds``."""
        return self.cooldowns.get(action, self.cooldown_seconds)


class RollbackConfig(Strict):
    """Which model versions a ``rollback`` action may roll back to."""

    min_healthy_windows: int = Field(
        default=3, ge=1, le=STREAK_LIMIT, description="Healthy windows a version must have served to be a target."
    )
    min_events: int = Field(default=100, ge=0, description="Events a window needs to count as a healthy one.")


class AlertingConfig(Strict):
    """The alert policies (empty: the built-in `streams.actions.policies.DEFAULT_POLICIES`) and rollback rails."""

    enabled: bool = Field(default=True, description="False: no policy acts on this model (its rows are still "
                                                    "written).")
    policies: tuple[AlertPolicy, ...] = ()
    rollback: RollbackConfig = RollbackConfig()

    @field_validator("policies")
    @classmethod
    def _unique_names(cls, value: tuple[AlertPolicy, ...]) -> tuple[AlertPolicy, ...]:
        names = [p.name for p in value]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"policy names must be unique: {dup}")
        return value


class ModelConfig(Strict):
    """How one model (version) is monitored. Every field has a default; see model_config.example.yaml.

    >>> cfg = ModelConfig.model_validate({"detectors": {"drift": {"alpha": 0.05}}})
    >>> cfg.detectors.drift.kwargs()
    {'alpha': 0.05, 'psi_floor': 0.1, 'js_floor': 0.05, 'min_samples': 200, 'eps': 0.0001}
    >>> cfg.feature_type("age", inferred="numeric"), len(cfg.version)
    ('numeric', 12)
    """

    features: dict[str, FeatureType] = Field(default_factory=dict, description="Type overrides; others inferred.")
    window_seconds: int | None = Field(default=None, ge=1, le=86400, description="None: the worker's setting.")
    allowed_lateness_seconds: float | None = Field(default=None, ge=0, le=86400)
    tick_seconds: int = Field(default=5, ge=1, le=3600, description="Sub-window of the sequential detectors.")
    tick_lateness_seconds: float = Field(default=2.0, ge=0, le=3600, description="How long a tick waits for late "
                                         "events before it closes; at most the window's allowed lateness.")
    slices: tuple[str, ...] | None = Field(default=None, description="Segment attributes to slice; None: all.")
    slice_pairs: bool = False
    reference: ReferenceConfig = ReferenceConfig()
    summary: SummaryConfig = SummaryConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    false_alarm_budget: FalseAlarmBudgetConfig = FalseAlarmBudgetConfig()
    alerting: AlertingConfig = AlertingConfig()

    @field_validator("slices")
    @classmethod
    def _slice_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (len(set(value)) != len(value) or not all(value)):
            raise ValueError("slice attributes must be unique, non-empty names")
        return value

    def feature_type(self, name: str, inferred: FeatureType) -> FeatureType:
        """The configured type of a feature, else the one inferred from its values."""
        return self.features.get(name, inferred)

    def canonical_data(self) -> dict[str, Any]:
        """The configuration fields as JSON data, with the budgeted knobs the configuration did not set left out.

        A budgeted knob (`knobs.BUDGET_KNOBS`) that is written, even at its default value, takes its family
        out of the false-alarm budget, so writing it changes a result and must change the version; one that
        is not written is left out (the budget sets it). Validating this data again gives the same version.
        """
        data = self.model_dump(mode="json", include=set(ModelConfig.model_fields))
        explicit = explicit_budget_knobs(self.detectors)
        for path, knob in BUDGET_KNOBS.items():
            if f"{path}.{knob}" not in explicit:
                node = data["detectors"]
                for part in path.split("."):
                    node = node[part]
                del node[knob]
        return data

    def canonical_json(self) -> str:
        """Sorted, compact JSON of `canonical_data`: the text the version hashes."""
        return canonical(self.canonical_data())

    @cached_property
    def version(self) -> str:
        """First 12 hex digits of the SHA-256 of `canonical_json`."""
        return digest(self.canonical_json())


class ResolvedModelConfig(ModelConfig):
    """The effective configuration of one (model_id, model_version); its `version` hashes the settings only."""

    model_id: str
    model_version: str


class ModelEntry(ModelConfig):
    """A model's section of the file: its settings and its per-version overrides."""

    versions: dict[str, ModelConfig] = Field(default_factory=dict)


class FileSchema(Strict):
    """The whole file as written, before merging; validated first so a misplaced key is named where it is."""

    defaults: ModelConfig = ModelConfig()
    models: dict[str, ModelEntry] = Field(default_factory=dict)


def canonical(data: Any) -> str:
    """The JSON text that versions hash: sorted keys, no whitespace, no NaN."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(text: str) -> str:
    """First 12 hex digits of the SHA-256 of `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
