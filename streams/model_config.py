"""Per-model monitoring configuration: one YAML or TOML file, validated, versioned and reloadable.

The file has a ``defaults`` section and a ``models`` section keyed by model id; a model may override
settings per model version under ``versions``. Sections are deep-merged as plain mappings *before*
validation (defaults <- model <- version), so an override names only the keys it changes. Every key is
optional: a model missing from the file is monitored with the defaults, on all of its features.

Why a content hash as the version: every ``windows`` row and finding records the configuration it was
computed with, and a hash of the canonical (validated, defaults filled, keys sorted) JSON changes exactly
when a number that can change a result changes, never for comments, key order or a default written out.

Detector knobs mirror the constructor parameters (names and defaults) of the classes in ``detectors/``;
``kwargs()`` gives them ready to pass, e.g. ``UnivariateDrift(reference, **cfg.detectors.drift.kwargs())``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streams.settings import Settings

log = logging.getLogger("driftline.model_config")

FeatureType = Literal["numeric", "categorical", "ignore"]
TickMethod = Literal["cusum", "page_hinkley", "adwin", "ddm", "eddm", "hddm_a", "hddm_w"]
SUFFIXES = (".yaml", ".yml", ".toml")


class ConfigError(ValueError):
    """The model configuration file cannot be used; each problem names the file and the key path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Knobs(_Strict):
    enabled: bool = True

    def kwargs(self) -> dict[str, Any]:
        """The detector's constructor keyword arguments (everything but ``enabled``)."""
        return self.model_dump(exclude={"enabled"})


Alpha = Field(default=0.01, gt=0, lt=1, description="Significance level of the window's test.")


class DriftKnobs(_Knobs):
    """`detectors.drift.UnivariateDrift`."""

    alpha: float = Alpha
    psi_floor: float = Field(default=0.1, ge=0)
    js_floor: float = Field(default=0.05, ge=0, le=1)
    min_samples: int = Field(default=200, ge=1)
    eps: float = Field(default=1e-4, gt=0, lt=1)


class RateKnobs(_Knobs):
    """`detectors.quality.MissingRateDetector` and `OutOfRangeDetector`."""

    alpha: float = Field(default=0.001, gt=0, lt=1)
    min_count: int = Field(default=100, ge=1)
    method: Literal["exact", "z"] = "exact"


class UnseenKnobs(RateKnobs):
    """`detectors.quality.UnseenCategoryDetector`."""

    top: int = Field(default=10, ge=1)


class TypeErrorKnobs(_Knobs):
    """`detectors.quality.TypeErrorDetector`."""

    tolerance: float = Field(default=0.0, ge=0, le=1)


class QualityConfig(_Strict):
    missing: RateKnobs = RateKnobs()
    out_of_range: RateKnobs = RateKnobs()
    unseen: UnseenKnobs = UnseenKnobs()
    type_errors: TypeErrorKnobs = TypeErrorKnobs()


class MMDKnobs(_Knobs):
    """`detectors.multivariate.MMDDrift` (its ``device`` is the worker's choice, not the model's)."""

    alpha: float = Alpha
    n_permutations: int = Field(default=200, ge=1)
    min_samples: int = Field(default=50, ge=2)
    seed: int = 0

    @model_validator(mode="after")
    def _can_reject(self) -> Self:
        # The permutation p-value is at least 1 / (1 + n_permutations): below that the test never fires.
        if (1 + self.n_permutations) * self.alpha < 1:
            need = math.ceil(1 / self.alpha) - 1
            raise ValueError(f"n_permutations must be >= {need} for a p-value to reach alpha={self.alpha}")
        return self


class PCAKnobs(_Knobs):
    """`detectors.multivariate.PCAReconstructionDrift`."""

    alpha: float = Alpha
    variance: float = Field(default=0.9, gt=0, le=1)
    min_samples: int = Field(default=50, ge=2)
    n_folds: int = Field(default=5, ge=2)


class MultivariateConfig(_Strict):
    mmd: MMDKnobs = MMDKnobs()
    pca: PCAKnobs = PCAKnobs()


class SequentialKnobs(_Knobs):
    """`detectors.sequential.TickChangeDetector`: ``false_alarm_rate`` is the expected false alarms per tick."""

    false_alarm_rate: float = Field(default=1e-4, gt=0, lt=1)
    k: float = Field(default=1.0, ge=0)
    warmup_ticks: int = Field(default=1, ge=0)
    min_count: int = Field(default=30, ge=1)
    methods: tuple[TickMethod, ...] = Field(default=("cusum",), min_length=1)

    @field_validator("methods")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("methods must not repeat")
        return value


class DropKnobs(_Knobs):
    """`detectors.performance.PerformanceDrop`."""

    alpha: float = Alpha
    margin: float = Field(default=0.0, ge=0, lt=1)
    rmse_margin: float = Field(default=0.0, ge=0)
    min_labeled: int = Field(default=200, ge=1)
    min_per_class: int = Field(default=30, ge=1)


class EstimatedAccuracyKnobs(_Knobs):
    """`detectors.performance.EstimatedAccuracy`."""

    alpha: float = Alpha
    margin: float = Field(default=0.0, ge=0, lt=1)
    min_count: int = Field(default=100, ge=1)
    level: float = Field(default=0.99, gt=0, lt=1)


class PerformanceConfig(_Strict):
    drop: DropKnobs = DropKnobs()
    estimated_accuracy: EstimatedAccuracyKnobs = EstimatedAccuracyKnobs()


class CalibrationKnobs(_Knobs):
    """`detectors.calibration.CalibrationDrift`."""

    alpha: float = Alpha
    min_labeled: int = Field(default=200, ge=1)
    min_expected: float = Field(default=5.0, gt=0)


class SliceKnobs(_Knobs):
    """`detectors.slices.SliceAccuracy`."""

    baseline: Literal["rest", "reference"] = "rest"
    fdr: float = Field(default=0.05, gt=0, lt=1)
    margin: float = Field(default=0.0, ge=0, lt=1)
    min_support: int = Field(default=100, ge=1)
    k_worst: int = Field(default=5, ge=0)
    level: float = Field(default=0.95, gt=0, lt=1)


class DetectorsConfig(_Strict):
    drift: DriftKnobs = DriftKnobs()
    quality: QualityConfig = QualityConfig()
    multivariate: MultivariateConfig = MultivariateConfig()
    sequential: SequentialKnobs = SequentialKnobs()
    performance: PerformanceConfig = PerformanceConfig()
    calibration: CalibrationKnobs = CalibrationKnobs()
    slices: SliceKnobs = SliceKnobs()


class ReferenceConfig(_Strict):
    """Where the reference comes from; ``n_bins`` / ``max_categories`` go to `ReferenceProfile.fit`."""

    source: Literal["auto", "stored"] = "auto"
    windows: int = Field(default=5, ge=1, le=10_000, description="auto: the model version's first K windows.")
    inherit: bool = Field(default=False, description="A new model version starts from the previous one's.")
    n_bins: int = Field(default=50, ge=1)
    max_categories: int = Field(default=1000, ge=1)


class SummaryConfig(_Strict):
    """`WindowSummary.empty` sizes (changing one takes effect from the next window opened)."""

    reservoir_size: int = Field(default=512, ge=2)
    max_slices: int = Field(default=2000, ge=1)
    score_bins: int = Field(default=100, ge=1)
    cal_bins: int = Field(default=15, ge=1)


class AlertPolicy(_Strict):
    """When breaches of matching metrics become an alert and what it triggers (consumed by the alerting work)."""

    name: str = Field(min_length=1)
    metrics: tuple[str, ...] = Field(default=("*",), min_length=1, description="fnmatch globs on metric names.")
    min_consecutive_breaches: int = Field(default=1, ge=1)
    cooldown_seconds: float = Field(default=600.0, ge=0)
    severity: Literal["critical", "error", "warning", "info"] = "warning"
    actions: tuple[Literal["alert", "retrain", "rollback"], ...] = Field(default=("alert",), min_length=1)


class AlertingConfig(_Strict):
    policies: tuple[AlertPolicy, ...] = ()

    @field_validator("policies")
    @classmethod
    def _unique_names(cls, value: tuple[AlertPolicy, ...]) -> tuple[AlertPolicy, ...]:
        names = [p.name for p in value]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"policy names must be unique: {dup}")
        return value


class ModelConfig(_Strict):
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
        return _canonical(self.model_dump(mode="json", include=set(ModelConfig.model_fields)))

    @cached_property
    def version(self) -> str:
        """First 12 hex digits of the SHA-256 of `canonical_json`."""
        return _digest(self.canonical_json())


class ResolvedModelConfig(ModelConfig):
    """The effective configuration of one (model_id, model_version); its `version` hashes the settings only."""

    model_id: str
    model_version: str


class _ModelEntry(ModelConfig):
    versions: dict[str, ModelConfig] = Field(default_factory=dict)


class _FileSchema(_Strict):
    defaults: ModelConfig = ModelConfig()
    models: dict[str, _ModelEntry] = Field(default_factory=dict)


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        out[key] = _deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def _str_keys(data: Any) -> Any:
    """YAML reads `versions: {3: ...}` with an int key; model ids and versions are strings."""
    if isinstance(data, dict):
        return {str(k): _str_keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_str_keys(v) for v in data]
    return data


def _inner(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        return next(a for a in get_args(tp) if a is not type(None))
    return tp


def _known_keys(root: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `path` (a validation error's location) in the schema rooted at `root`."""
    tp: Any = root
    for part in path:
        tp = _inner(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part not in tp.model_fields:
                return []
            tp = tp.model_fields[part].annotation
        elif get_origin(tp) in (dict, list, tuple):
            tp = get_args(tp)[-1] if get_origin(tp) is not tuple else get_args(tp)[0]
        else:
            return []
    tp = _inner(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _loc(parts: tuple[Any, ...]) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text or "(top level)"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problems(exc: ValidationError, root: type[BaseModel], prefix: tuple[Any, ...] = ()) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        where = _loc(prefix + loc)
        if err["type"] == "extra_forbidden":
            known = _known_keys(root, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known)
            out.append(f"{where}: unknown key ({hint})")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(value, dict) else f" (got {_short(value)})"
        out.append(f"{where}: {msg}{shown}")
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML mapping that repeats a key is an error, not a silent override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _parse(path: Path) -> Any:
    if path.suffix not in SUFFIXES:
        raise ConfigError(str(path), [f"unsupported file type {path.suffix!r}: use {', '.join(SUFFIXES)}"])
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "YAML"
        raise ConfigError(str(path), [f"not valid {kind}: {exc}".replace("\n", " ")]) from None


@dataclass(frozen=True)
class MonitoringConfig:
    """The whole file, resolved: defaults, each configured model, and each configured model version.

    >>> cfg = MonitoringConfig.from_dict({"defaults": {"window_seconds": 300},
    ...                                    "models": {"fraud": {"versions": {3: {"slice_pairs": True}}}}})
    >>> r = cfg.resolve("fraud", "3")
    >>> r.window_seconds, r.slice_pairs, cfg.resolve("fraud", "2").slice_pairs, cfg.resolve("churn", "1").window_seconds
    (300, True, False, 300)
    """

    defaults: ModelConfig = field(default_factory=ModelConfig)
    models: Mapping[str, ModelConfig] = field(default_factory=dict)
    versions: Mapping[tuple[str, str], ModelConfig] = field(default_factory=dict)
    source: str = "<built-in defaults>"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MonitoringConfig:
        """Read and validate a ``.yaml`` / ``.yml`` / ``.toml`` file; raises `ConfigError`."""
        p = Path(path)
        return cls.from_dict(_parse(p), source=str(p))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> MonitoringConfig:
        """Validate parsed file content; raises `ConfigError` naming every bad key."""
        data = {} if data is None else _str_keys(data)
        if not isinstance(data, dict):
            raise ConfigError(source, ["the top level must be a mapping with 'defaults' and/or 'models'"])
        for section in ("defaults", "models"):
            data[section] = data.get(section) or {}
        if isinstance(data["models"], dict):
            data["models"] = {m: e or {} for m, e in data["models"].items()}
        try:
            _FileSchema.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(source, _problems(exc, _FileSchema)) from None
        problems: list[str] = []

        def check(raw: dict[str, Any], where: tuple[str, ...]) -> ModelConfig:
            try:
                return ModelConfig.model_validate(raw)
            except ValidationError as exc:
                problems.extend(_problems(exc, ModelConfig, where))
                return ModelConfig()

        defaults = check(data["defaults"], ("defaults",))
        models, versions = {}, {}
        for model_id, entry in data["models"].items():
            raw = {k: v for k, v in entry.items() if k != "versions"}
            merged = _deep_merge(data["defaults"], raw)
            models[model_id] = check(merged, ("models", model_id))
            for model_version, override in entry.get("versions", {}).items():
                where = ("models", model_id, "versions", model_version)
                versions[model_id, model_version] = check(_deep_merge(merged, override), where)
        if problems:
            raise ConfigError(source, problems)
        return cls(defaults, models, versions, source)

    def resolve(self, model_id: str, model_version: str, settings: Settings | None = None) -> ResolvedModelConfig:
        """defaults <- model <- version; with `settings`, unset window / lateness take the worker's values."""
        base = self.versions.get((model_id, model_version), self.models.get(model_id, self.defaults))
        data = base.model_dump()
        if settings is not None:
            if data["window_seconds"] is None:
                data["window_seconds"] = settings.window_seconds
            if data["allowed_lateness_seconds"] is None:
                data["allowed_lateness_seconds"] = settings.allowed_lateness_seconds
        return ResolvedModelConfig.model_validate({**data, "model_id": model_id, "model_version": model_version})

    def canonical_json(self) -> str:
        """The resolved configuration of the whole file, sorted and compact."""
        models: dict[str, Any] = {
            m: {"config": c.model_dump(mode="json"), "versions": {}} for m, c in self.models.items()
        }
        for (m, v), c in self.versions.items():
            models[m]["versions"][v] = c.model_dump(mode="json")
        return _canonical({"defaults": self.defaults.model_dump(mode="json"), "models": models})

    @cached_property
    def version(self) -> str:
        """First 12 hex digits of the SHA-256 of `canonical_json`: changes only when a setting does."""
        return _digest(self.canonical_json())


class ConfigWatcher:
    """Reloads the file without a restart: the worker calls `poll()` between batches.

    A change is detected by the file's inode, mtime and size (so an editor's atomic rename counts). An
    invalid new file never replaces a working configuration: it is logged once, kept in `error`, and the
    last valid configuration stays `current()` until the file is fixed. The first load must succeed.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.error: ConfigError | None = None
        self._signature = self._stat()
        self._current = MonitoringConfig.load(self.path)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def current(self) -> MonitoringConfig:
        """The latest valid configuration."""
        return self._current

    def poll(self) -> bool:
        """Re-read the file if it changed; True when the configuration's version changed."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            new = MonitoringConfig.load(self.path)
        except ConfigError as exc:
            self.error = exc
            log.error("model config rejected, keeping version %s:\n%s", self._current.version, exc)
            return False
        self.error = None
        changed = new.version != self._current.version
        self._current = new
        if changed:
            log.info("model config %s reloaded: version %s", self.path, new.version)
        return changed
