"""Per-model configuration: merging, defaults, errors that name the key, the content-hash version, reload."""

from __future__ import annotations

import inspect
import logging
import os
import textwrap
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
from pydantic import BaseModel, Field

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
from driftline.detectors.reference import ReferenceProfile
from driftline.detectors.summaries import WindowSummary
from driftline.streams.config.model_config import (
    ConfigError,
    ConfigWatcher,
    ModelConfig,
    MonitoringConfig,
    RateKnobs,
    ReferenceConfig,
    SummaryConfig,
    TickMethod,
)
from driftline.streams.config.model_config import knobs as knobs_module
from driftline.streams.config.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "streams" / "config" / "model_config.example.yaml"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str, name: str = "models.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        MonitoringConfig.load(write(tmp_path / name, text))
    return str(info.value)


# --- merging and defaults -------------------------------------------------------------------------------


def test_the_example_loads_and_its_defaults_section_is_exactly_the_built_in_defaults():
    cfg = MonitoringConfig.load(EXAMPLE)
    assert cfg.defaults == ModelConfig()
    assert set(cfg.models) == {"fraud", "churn"}


def test_model_and_version_overrides_merge_key_by_key_over_the_defaults():
    cfg = MonitoringConfig.load(EXAMPLE)
    fraud = cfg.resolve("fraud", "3")
    assert fraud.window_seconds == 300 and fraud.slices == ("region", "device") and fraud.slice_pairs
    assert fraud.features == {"account_id": "ignore", "zip_code": "categorical"}
    assert fraud.detectors.drift.alpha == 0.001 and fraud.detectors.drift.psi_floor == 0.1
    assert not fraud.detectors.multivariate.mmd.enabled and fraud.detectors.multivariate.pca.enabled
    assert [p.name for p in fraud.alerting.policies] == ["performance", "drift", "eu-slices"]
    performance, drift, eu = fraud.alerting.policies
    assert drift.cooldown_seconds == 600.0 and drift.resolve_after_windows == 2
    assert (performance.cooldown("alert"), performance.cooldown("rollback")) == (3600, 86400)
    assert eu.slices == ("region=eu*",) and eu.features == ("*",) and fraud.alerting.rollback.min_events == 100
    canary = cfg.resolve("fraud", "4")
    assert canary.reference.source == "stored" and canary.reference.windows == 5
    assert canary.detectors.sequential.false_alarm_rate == 1e-5 and canary.detectors.sequential.k == 1.0
    assert canary.detectors.drift.alpha == 0.001 and canary.window_seconds == 300
    churn = cfg.resolve("churn", "7")
    assert churn.reference == ReferenceConfig(windows=10, inherit=True)
    assert (churn.model_id, churn.model_version) == ("churn", "7")


def test_an_unconfigured_model_is_monitored_on_all_its_features_with_the_defaults(tmp_path):
    cfg = MonitoringConfig.load(write(tmp_path / "m.yaml", "defaults: {window_seconds: 120}\nmodels: {fraud: {}}\n"))
    other = cfg.resolve("never-configured", "1")
    assert other.window_seconds == 120
    assert other.features == {} and other.slices is None
    assert other.feature_type("age", inferred="numeric") == "numeric"
    assert other.feature_type("plan", inferred="categorical") == "categorical"
    assert other.model_dump(exclude={"model_id", "model_version", "window_seconds"}) == ModelConfig().model_dump(
        exclude={"window_seconds"}
    )
    assert MonitoringConfig().resolve("x", "1").detectors.drift.enabled


def test_feature_types_from_the_config_win_over_inference():
    cfg = ModelConfig.model_validate({"features": {"zip": "categorical", "id": "ignore"}})
    assert cfg.feature_type("zip", inferred="numeric") == "categorical"
    assert cfg.feature_type("id", inferred="numeric") == "ignore"


def test_version_overrides_inherit_a_defaults_mapping_they_do_not_mention(tmp_path):
    cfg = MonitoringConfig.load(write(tmp_path / "m.yaml", """
        defaults:
          features: {a: numeric}
        models:
          m:
            features: {b: categorical}
            versions:
              2: {features: {c: ignore}}
        """))
    assert cfg.resolve("m", "2").features == {"a": "numeric", "b": "categorical", "c": "ignore"}
    assert cfg.resolve("m", "1").features == {"a": "numeric", "b": "categorical"}


def test_worker_settings_fill_an_unset_window_and_lateness_only(tmp_path):
    cfg = MonitoringConfig.load(write(tmp_path / "m.yaml", "models: {m: {window_seconds: 300}}\n"))
    settings = Settings(window_seconds=30, allowed_lateness_seconds=4.0)
    own, other = cfg.resolve("m", "1", settings), cfg.resolve("x", "1", settings)
    assert (own.window_seconds, own.allowed_lateness_seconds) == (300, 4.0)
    assert (other.window_seconds, other.allowed_lateness_seconds) == (30, 4.0)
    assert other.version != cfg.resolve("x", "1").version


def test_yaml_exponent_floats_without_a_dot_still_load_as_numbers(tmp_path):
    text = "defaults: {detectors: {sequential: {false_alarm_rate: 1e-5}}}"
    cfg = MonitoringConfig.load(write(tmp_path / "m.yml", text))
    assert cfg.defaults.detectors.sequential.false_alarm_rate == 1e-5


def test_an_empty_file_means_the_built_in_defaults(tmp_path):
    cfg = MonitoringConfig.load(write(tmp_path / "m.yaml", "# nothing configured yet\n"))
    assert cfg.version == MonitoringConfig().version


# --- errors name the file and the key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: {fraud: {detectors: {drift: {alpha: 2.0}}}}",
         "models.fraud.detectors.drift.alpha: Input should be less than 1 (got 2.0)"),
        ("models: {fraud: {detectors: {drfit: {alpha: 0.1}}}}",
         "models.fraud.detectors.drfit: unknown key (did you mean 'drift'?)"),
        ("modles: {}", "modles: unknown key (did you mean 'models'?)"),
        ("defaults: {refrence: {windows: 3}}", "defaults.refrence: unknown key (did you mean 'reference'?)"),
        ("defaults: {detectors: {quality: {missing: {methd: z}}}}",
         "defaults.detectors.quality.missing.methd: unknown key (did you mean 'method'?)"),
        ("defaults: {xyz: 1}", "defaults.xyz: unknown key (known: features, window_seconds,"),
        ("models: {m: {versions: {'3': {versions: {}}}}}", "models.m.versions.3.versions: unknown key"),
        ("models: {m: {features: {age: numerc}}}",
         "models.m.features.age: Input should be 'numeric', 'categorical' or 'ignore' (got 'numerc')"),
        ("defaults: {window_seconds: 0}", "defaults.window_seconds: Input should be greater than or equal to 1"),
        ("defaults: {alerting: {policies: [{name: p, severity: loud}]}}",
         "defaults.alerting.policies[0].severity: Input should be 'critical', 'error', 'warning' or 'info'"),
        ("defaults: {alerting: {policies: [{name: p, actions: [page]}]}}",
         "defaults.alerting.policies[0].actions[0]: Input should be 'alert', 'retrain' or 'rollback'"),
        ("defaults: {alerting: {policies: [{metrics: ['*']}]}}", "defaults.alerting.policies[0].name: Field required"),
        ("defaults: {alerting: {policies: [{name: p}, {name: p}]}}", "policy names must be unique: ['p']"),
        ("defaults: {alerting: {policies: [{name: p, cooldowns: {retrain: 60}}]}}",
         "defaults.alerting.policies[0]: cooldowns names actions the policy does not take: ['retrain']"),
        ("defaults: {alerting: {policies: [{name: p, resolve_after_windows: 0}]}}",
         "defaults.alerting.policies[0].resolve_after_windows: Input should be greater than or equal to 1"),
        ("defaults: {alerting: {rollback: {min_healthy_windows: 0}}}",
         "defaults.alerting.rollback.min_healthy_windows: Input should be greater than or equal to 1"),
        ("defaults: {alerting: {rollbak: {}}}", "defaults.alerting.rollbak: unknown key (did you mean 'rollback'?)"),
        ("defaults: {detectors: {sequential: {methods: [cusum, cusum]}}}", "methods must not repeat"),
        ("defaults: {detectors: {sequential: {methods: [kswin]}}}", "sequential.methods[0]: Input should be 'cusum'"),
        ("defaults: {detectors: {multivariate: {mmd: {n_permutations: 50}}}}",
         "defaults.detectors.multivariate.mmd: n_permutations must be >= 99 for a p-value to reach alpha=0.01"),
        ("defaults: {detectors: {drift: {alpha: .nan}}}", "defaults.detectors.drift.alpha: "),
        ("defaults: {slices: [region, region]}", "defaults.slices: slice attributes must be unique"),
        ("[1, 2]", "the top level must be a mapping"),
        ("defaults:\n  tick_seconds: 5\n  tick_seconds: 10\n", "duplicate key 'tick_seconds'"),
        ("defaults: {window_seconds: [60}", "not valid YAML"),
    ],
)
def test_a_bad_file_is_rejected_with_the_file_and_key_path(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    assert f"{tmp_path / 'models.yaml'}: " in message
    assert expected in message


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as info:
        MonitoringConfig.load(write(tmp_path / "m.yaml", "models: {a: {window_seconds: -1}, b: {tick_seconds: 0}}"))
    assert [p.split(":")[0] for p in info.value.problems] == ["models.a.window_seconds", "models.b.tick_seconds"]


def test_toml_errors_name_the_key_too(tmp_path):
    message = error_of(tmp_path, "[models.fraud.detectors.drift]\nalpah = 0.1\n", name="m.toml")
    assert "models.fraud.detectors.drift.alpah: unknown key (did you mean 'alpha'?)" in message
    assert "not valid TOML" in error_of(tmp_path, "[models\n", name="m.toml")


def test_unreadable_or_unknown_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        MonitoringConfig.load(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=r"unsupported file type '\.json'"):
        MonitoringConfig.load(write(tmp_path / "m.json", "{}"))


# --- version: a content hash of the effective configuration -----------------------------------------------

BASE = """
# production thresholds
defaults:
  features: {a: numeric, b: categorical}
  detectors:
    drift: {alpha: 0.01, min_samples: 300}
models:
  fraud:
    window_seconds: 300
"""


def version_of(tmp_path: Path, text: str, name: str = "v.yaml") -> str:
    return MonitoringConfig.load(write(tmp_path / name, text)).version


def test_version_ignores_comments_key_order_and_defaults_written_out(tmp_path):
    base = version_of(tmp_path, BASE)
    assert len(base) == 12 and int(base, 16) >= 0
    reordered = """
    models:
      fraud: {window_seconds: 300}   # five minutes
    defaults:
      features: {b: categorical, a: numeric}
      detectors:
        drift:
          min_samples: 300
          alpha: 0.01
          psi_floor: 0.1
    """
    assert version_of(tmp_path, reordered) == base
    toml = """
    [defaults.features]
    b = "categorical"
    a = "numeric"
    [defaults.detectors.drift]
    min_samples = 300
    alpha = 0.01  # written, as in BASE: a written alpha takes drift out of the false-alarm budget
    [models.fraud]
    window_seconds = 300
    """
    assert version_of(tmp_path, toml, "v.toml") == base


def test_version_changes_when_a_threshold_changes(tmp_path):
    base = version_of(tmp_path, BASE)
    assert version_of(tmp_path, BASE.replace("alpha: 0.01", "alpha: 0.02")) != base
    assert version_of(tmp_path, BASE.replace("300\n", "600\n")) != base
    assert version_of(tmp_path, BASE + "    versions: {'2': {tick_seconds: 10}}\n") != base


def test_a_models_version_depends_only_on_its_own_effective_configuration(tmp_path):
    a = MonitoringConfig.load(write(tmp_path / "a.yaml", BASE))
    b = MonitoringConfig.load(write(tmp_path / "b.yaml", BASE + "  churn: {slice_pairs: true}\n"))
    assert a.version != b.version
    assert a.resolve("fraud", "1").version == b.resolve("fraud", "1").version
    assert a.resolve("churn", "1").version != b.resolve("churn", "1").version
    fraud = a.resolve("fraud", "1")
    assert fraud.version == ModelConfig.model_validate_json(fraud.canonical_json()).version


# --- reload without restart -------------------------------------------------------------------------------


def touch(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_watcher_picks_up_a_changed_file_and_ignores_an_unchanged_one(tmp_path, monkeypatch):
    path = tmp_path / "m.yaml"
    touch(path, "defaults: {detectors: {drift: {alpha: 0.01}}}\n", 1_000_000_000)
    watcher = ConfigWatcher(path)
    first = watcher.current()
    loads = []
    real_load = MonitoringConfig.load
    monkeypatch.setattr(MonitoringConfig, "load", classmethod(lambda cls, p: loads.append(p) or real_load(p)))
    assert not watcher.poll() and loads == []
    touch(path, "defaults: {detectors: {drift: {alpha: 0.05}}}\n", 2_000_000_000)
    assert watcher.poll()
    assert watcher.current().defaults.detectors.drift.alpha == 0.05 and watcher.current().version != first.version
    touch(path, "# same settings, new comment\ndefaults: {detectors: {drift: {alpha: 0.05}}}\n", 3_000_000_000)
    assert not watcher.poll() and len(loads) == 2 and watcher.error is None


def test_watcher_keeps_the_last_valid_config_when_the_new_file_is_invalid(tmp_path, caplog):
    path = tmp_path / "m.yaml"
    touch(path, "defaults: {window_seconds: 60}\n", 1_000_000_000)
    watcher = ConfigWatcher(path)
    good = watcher.current()
    touch(path, "defaults: {window_secnds: 90}\n", 2_000_000_000)
    with caplog.at_level(logging.ERROR, logger="driftline.model_config"):
        assert not watcher.poll()
    assert watcher.current() is good
    assert watcher.error is not None and "defaults.window_secnds: unknown key" in str(watcher.error)
    assert "window_secnds" in caplog.text and good.version in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="driftline.model_config"):
        assert not watcher.poll()
    assert caplog.text == ""
    path.unlink()
    assert not watcher.poll() and watcher.current() is good and "cannot read" in str(watcher.error)
    touch(path, "defaults: {window_seconds: 90}\n", 3_000_000_000)
    assert watcher.poll() and watcher.current().defaults.window_seconds == 90 and watcher.error is None


def test_watcher_refuses_to_start_on_an_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="window_seconds"):
        ConfigWatcher(write(tmp_path / "m.yaml", "defaults: {window_seconds: x}\n"))


# --- the knobs mirror the detector classes ----------------------------------------------------------------


def ctor_defaults(func: Any, skip: set[str]) -> dict[str, Any]:
    params = inspect.signature(func).parameters.values()
    return {p.name: p.default for p in params if p.name not in {"self", "cls", "reference", *skip}}


KNOBS = {
    ("drift",): drift.UnivariateDrift,
    ("quality", "missing"): quality.MissingRateDetector,
    ("quality", "out_of_range"): quality.OutOfRangeDetector,
    ("quality", "unseen"): quality.UnseenCategoryDetector,
    ("quality", "type_errors"): quality.TypeErrorDetector,
    ("multivariate", "mmd"): multivariate.MMDDrift,
    ("multivariate", "pca"): multivariate.PCAReconstructionDrift,
    ("sequential",): sequential.TickChangeDetector,
    ("performance", "drop"): performance_drop.PerformanceDrop,
    ("performance", "estimated_accuracy"): estimated_accuracy.EstimatedAccuracy,
    ("calibration",): calibration.CalibrationDrift,
    ("slices",): slice_accuracy.SliceAccuracy,
}


def knobs(cfg: ModelConfig, path: tuple[str, ...]) -> Any:
    node: Any = cfg.detectors
    for part in path:
        node = getattr(node, part)
    return node


def plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("path", list(KNOBS), ids=".".join)
def test_detector_knobs_have_the_constructors_names_and_defaults(path):
    expected = ctor_defaults(KNOBS[path], skip={"device"})
    got = knobs(ModelConfig(), path).kwargs()
    assert {k: plain(v) for k, v in got.items()} == {k: plain(v) for k, v in expected.items()}


def test_every_detector_family_and_class_has_a_section():
    families = {p[0] for p in KNOBS}
    assert families == set(ModelConfig().detectors.model_dump())
    for family in ("quality", "multivariate", "performance"):
        assert {p[1] for p in KNOBS if p[0] == family} == set(getattr(ModelConfig().detectors, family).model_dump())


def test_reference_and_summary_sizes_mirror_their_constructors():
    fit = ctor_defaults(ReferenceProfile.fit, skip={"numeric", "categorical", "classes", "task", "values"})
    assert fit == ReferenceConfig().model_dump(include=set(fit))
    assert set(fit) == set(ReferenceConfig().model_dump()) - {"source", "windows", "inherit"}
    empty = ctor_defaults(WindowSummary.empty, skip={"profile", "slice_pairs"})
    assert empty == SummaryConfig().model_dump()
    assert set(get_args(TickMethod)) == set(sequential.METHODS)


def test_the_examples_knobs_construct_every_detector():
    cfg = MonitoringConfig.load(EXAMPLE).resolve("fraud", "4")
    rng = np.random.default_rng(0)
    n = 3000
    data = {"a": rng.normal(size=n), "b": rng.normal(size=n)}
    profile = ReferenceProfile.fit(data, classes=["no", "yes"], n_bins=cfg.reference.n_bins)
    ref = WindowSummary.empty(profile, **cfg.summary.model_dump())
    scores = rng.random(n)
    labels = np.where(rng.random(n) < scores, "yes", "no").tolist()
    ref.add_predictions([f"p{i}" for i in range(n)], data, {}, scores=scores)
    ref.add_labels(labels=labels, scores=scores, segments={"region": rng.choice(["eu", "us"], n).tolist()})
    tick_ref = sequential.TickReference.from_summary(ref)
    for path, cls in KNOBS.items():
        reference: Any = tick_ref if cls is sequential.TickChangeDetector else ref
        detector = cls(reference, **knobs(cfg, path).kwargs())
        assert isinstance(detector, cls)
        if cls is not sequential.TickChangeDetector:
            assert isinstance(detector.update(ref), list)


def test_all_config_models_forbid_unknown_keys():
    seen: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [ModelConfig]
    while todo:
        model = todo.pop()
        seen.add(model)
        assert model.model_config.get("extra") == "forbid", model
        for f in model.model_fields.values():
            for tp in (f.annotation, *get_args(f.annotation)):
                if isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in seen:
                    todo.append(tp)
    assert len(seen) > 15


# --- the knobs are derived from the constructors, not copied ------------------------------------------------


def test_a_changed_constructor_default_changes_the_derived_default(monkeypatch):
    init, cal = drift.UnivariateDrift.__init__, calibration.CalibrationDrift.__init__
    monkeypatch.setattr(init, "__defaults__", (0.05, *init.__defaults__[1:]))
    monkeypatch.setattr(cal, "__kwdefaults__", {**cal.__kwdefaults__, "min_labeled": 50})
    rebuilt = knobs_module.detectors_model(knobs_module.SECTIONS)()
    assert rebuilt.drift.alpha == 0.05 and rebuilt.drift.psi_floor == 0.1
    assert rebuilt.calibration.kwargs() == {"alpha": 0.01, "min_labeled": 50, "min_expected": 5.0}
    assert ModelConfig().detectors.drift.alpha == 0.01  # the models built at import keep theirs
    with pytest.raises(ValueError, match="less than 1"):
        type(rebuilt).model_validate({"drift": {"alpha": 1.5}})


class FakeDetector:
    def __init__(self, reference: object, level: float = 0.9, n: int = 7, mode: str = "a", device: str = "cpu"):
        self.reference = reference


def test_a_knob_model_takes_names_defaults_order_and_types_from_the_signature_and_bounds_from_its_section():
    section = knobs_module.Section("FakeKnobs", FakeDetector, {"level": Field(gt=0, lt=1)}, skip=("device",))
    model = knobs_module.knob_model(section)
    assert list(model.model_fields) == ["enabled", "level", "n", "mode"]
    assert model().kwargs() == {"level": 0.9, "n": 7, "mode": "a"}
    assert model(n="8").n == 8
    for bad in ({"level": 1.0}, {"n": "x"}, {"device": "cuda"}):
        with pytest.raises(ValueError):
            model(**bad)

    def check(knobs: Any) -> Any:
        if knobs.n * knobs.level < 7:
            raise ValueError("n * level too small")
        return knobs

    checked = knobs_module.knob_model(section._replace(check=check))
    assert checked(n=8).n == 8
    with pytest.raises(ValueError, match="n \\* level too small"):
        checked()
    with pytest.raises(TypeError, match=r"no knob \['levle'\]"):
        knobs_module.knob_model(section._replace(bounds={"levle": Field(gt=0)}))
    with pytest.raises(ValueError, match="greater than or equal to 10"):  # a default outside its own bounds
        knobs_module.knob_model(section._replace(bounds={"n": Field(ge=10)}))()
    with pytest.raises(TypeError, match="knob 'x' needs a type and a default"):
        knobs_module.knob_model(section._replace(detector=lambda reference, x: None, bounds={}))


def test_classes_that_share_a_constructor_share_one_knob_model():
    quality_cfg = ModelConfig().detectors.quality
    assert type(quality_cfg.missing) is type(quality_cfg.out_of_range) is RateKnobs
    assert RateKnobs.__doc__ and "OutOfRangeDetector" in RateKnobs.__doc__
