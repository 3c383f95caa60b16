"""Per-model monitoring configuration: one YAML or TOML file, validated, versioned and reloadable.

The file has a ``defaults`` section and a ``models`` section keyed by model id; a model may override
settings per model version under ``versions``. Every key is optional: a model missing from the file is
monitored with the defaults, on all of its features.

The package re-exports its public names from the modules that own them:

- `knobs`: detector knobs derived from the constructors of the classes in ``detectors/``; ``kwargs()``
  gives them ready to pass, e.g. ``UnivariateDrift(reference, **cfg.detectors.drift.kwargs())``;
- `schema`: the other keys of a model's configuration (among them its ``false_alarm_budget``), and its
  content-hash ``version``;
- `loading`: reading, merging and validating the file (`MonitoringConfig`, `ConfigError`);
- `watcher`: `ConfigWatcher`, reloading the file without a restart.
"""

from driftline.streams.config.model_config.knobs import (
    BUDGET_KNOBS,
    WINDOW_BUDGET_KNOBS,
    Alpha,
    CalibrationKnobs,
    DetectorsConfig,
    DriftKnobs,
    DropKnobs,
    EstimatedAccuracyKnobs,
    Knobs,
    MMDKnobs,
    MultivariateConfig,
    PCAKnobs,
    PerformanceConfig,
    QualityConfig,
    RateKnobs,
    SequentialKnobs,
    SliceKnobs,
    TickMethod,
    TypeErrorKnobs,
    UnseenKnobs,
    explicit_budget_knobs,
    knobs_at,
)
from driftline.streams.config.model_config.loading import SUFFIXES, ConfigError, MonitoringConfig
from driftline.streams.config.model_config.schema import (
    AlertingConfig,
    AlertPolicy,
    FalseAlarmBudgetConfig,
    FeatureType,
    ModelConfig,
    ReferenceConfig,
    ResolvedModelConfig,
    SummaryConfig,
)
from driftline.streams.config.model_config.watcher import ConfigWatcher, config_source, log

__all__ = [
    "BUDGET_KNOBS",
    "SUFFIXES",
    "WINDOW_BUDGET_KNOBS",
    "AlertPolicy",
    "AlertingConfig",
    "Alpha",
    "CalibrationKnobs",
    "ConfigError",
    "ConfigWatcher",
    "DetectorsConfig",
    "DriftKnobs",
    "DropKnobs",
    "EstimatedAccuracyKnobs",
    "FalseAlarmBudgetConfig",
    "FeatureType",
    "Knobs",
    "MMDKnobs",
    "ModelConfig",
    "MonitoringConfig",
    "MultivariateConfig",
    "PCAKnobs",
    "PerformanceConfig",
    "QualityConfig",
    "RateKnobs",
    "ReferenceConfig",
    "ResolvedModelConfig",
    "SequentialKnobs",
    "SliceKnobs",
    "SummaryConfig",
    "TickMethod",
    "TypeErrorKnobs",
    "UnseenKnobs",
    "config_source",
    "explicit_budget_knobs",
    "knobs_at",
    "log",
]
