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
from typing import Any, Literal

from pydantic import Field, field_validator

from driftline.streams.config.model_config.knobs import DetectorsConfig, Strict

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


class AlertPolicy(Strict):
    """When breaches of matching metrics become an alert and what it triggers (consumed by the alerting work)."""

    name: str = Field(min_length=1)
    metrics: tuple[str, ...] = Field(default=("*",), min_length=1, description="fnmatch globs on metric names.")
    min_consecutive_breaches: int = Field(default=1, ge=1)
    cooldown_seconds: float = Field(default=600.0, ge=0)
    severity: Literal["critical", "error", "warning", "info"] = "warning"
    actions: tuple[Literal["alert", "retrain", "rollback"], ...] = Field(default=("alert",), min_length=1)


class AlertingConfig(Strict):
    policies: tuple[AlertPolicy, ...] = ()

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
    slices: tuple[str, ...] | None = Field(default=None, description="Segment attributes to slice; None: all.")
    slice_pairs: bool = False
    reference: ReferenceConfig = ReferenceConfig()
    summary: SummaryConfig = SummaryConfig()
    detectors: DetectorsConfig = DetectorsConfig()
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

    def canonical_json(self) -> str:
        """Sorted, compact JSON of the configuration fields: the text the version hashes."""
        return canonical(self.model_dump(mode="json", include=set(ModelConfig.model_fields)))

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
