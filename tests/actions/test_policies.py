"""Built-in policies, row matching, and the alerting section of the configuration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from driftline.detectors import sequential
from driftline.streams.actions.findings import FindingRow
from driftline.streams.actions.policies import DEFAULT_POLICIES, effective_policies, matches
from driftline.streams.config.model_config.schema import AlertingConfig, AlertPolicy, ModelConfig, RollbackConfig

# Every metric a detector judges today (a threshold or a p-value), by the policy that should take it.
JUDGED = {
    "drift": ["ks", "chi2", "prediction_drift", "missing_rate", "out_of_range_rate", "unseen_category_rate",
              "type_errors", "mmd", "pca_reconstruction_error"],
    "performance": ["accuracy", "f1_macro", "roc_auc", "rmse", "estimated_accuracy", "calibration_hl",
                    "slice_accuracy"],
    "sequential": list(sequential.METHODS),
}


def row(metric: str, feature: str = "", slice_: str = "") -> FindingRow:
    return FindingRow(metric, feature, slice_, 0.5, 100, True, 0.1, 0.001)


@pytest.mark.parametrize(("name", "metric"), [(n, m) for n, ms in JUDGED.items() for m in ms])
def test_every_judged_metric_falls_in_exactly_one_built_in_policy(name, metric):
    taking = [p.name for p in DEFAULT_POLICIES if matches(p, row(metric, "age"))]
    assert taking == [name]


def test_the_built_in_policies_are_the_documented_ones():
    drift, performance, seq = DEFAULT_POLICIES
    assert (drift.name, drift.min_consecutive_breaches, drift.severity, drift.actions) == (
        "drift", 3, "warning", ("alert", "retrain"))
    assert (seq.name, seq.min_consecutive_breaches, seq.severity, seq.actions) == (
        "sequential", 1, "warning", ("alert", "retrain"))
    assert (performance.name, performance.min_consecutive_breaches, performance.severity, performance.actions) == (
        "performance", 1, "critical", ("alert",))
    assert not [p for p in DEFAULT_POLICIES if "rollback" in p.actions]


def test_rank_keyed_worst_slice_rows_and_unjudged_metrics_are_in_no_built_in_policy():
    for r in (row("worst_slice", "#1"), row("psi", "age"), row("ece"), row("mae")):
        assert not [p for p in DEFAULT_POLICIES if matches(p, r)]


def test_configured_policies_replace_the_built_in_ones_whole():
    assert effective_policies(ModelConfig().alerting) == DEFAULT_POLICIES
    custom = AlertingConfig.model_validate({"policies": [{"name": "drift", "metrics": ["ks"]}]})
    assert [(p.name, p.metrics, p.min_consecutive_breaches) for p in effective_policies(custom)] == [
        ("drift", ("ks",), 1)]


def test_feature_and_slice_globs_and_empty_columns():
    age = AlertPolicy(name="a", features=("age", "inc*"))
    assert matches(age, row("ks", "age")) and matches(age, row("ks", "income"))
    assert not matches(age, row("ks", "Age")), "globs are case-sensitive"
    assert not matches(age, row("accuracy")), "a row about no feature needs a glob that matches ''"
    eu = AlertPolicy(name="eu", slices=("region=eu",))
    assert matches(eu, row("slice_accuracy", slice_="region=eu")) and not matches(eu, row("accuracy"))


def test_a_worst_slice_rank_is_not_a_feature_and_its_slice_column_is_matched_when_set():
    features_only = AlertPolicy(name="f", features=("#1",))
    assert not matches(features_only, row("worst_slice", "#1"))
    assert matches(AlertPolicy(name="any"), row("worst_slice", "#1"))
    eu = AlertPolicy(name="eu", slices=("region=eu",))
    assert matches(eu, row("worst_slice", "#2", "region=eu")) and not matches(eu, row("worst_slice", "#2"))


# --- the schema -----------------------------------------------------------------------------------------------


def test_policy_defaults_and_per_action_cooldowns():
    p = AlertPolicy(name="p", actions=("alert", "rollback"), cooldown_seconds=60, cooldowns={"rollback": 86400})
    assert (p.features, p.slices, p.resolve_after_windows) == (("*",), ("*",), 2)
    assert (p.cooldown("alert"), p.cooldown("rollback")) == (60, 86400)
    assert RollbackConfig() == AlertingConfig().rollback == RollbackConfig(min_healthy_windows=3, min_events=100)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cooldowns": {"rollback": 5}}, "cooldowns names actions the policy does not take: ['rollback']"),
        ({"cooldowns": {"alert": -1}}, "cooldowns.alert\n  Input should be greater than or equal to 0"),
        ({"cooldowns": {"page": 1}}, "Input should be 'alert', 'retrain' or 'rollback'"),
        ({"actions": ["alert", "alert"]}, "actions must not repeat"),
        ({"resolve_after_windows": 0}, "resolve_after_windows\n  Input should be greater than or equal to 1"),
        ({"min_consecutive_breaches": 33}, "min_consecutive_breaches\n  Input should be less than or equal to 32"),
        ({"features": []}, "features\n  Tuple should have at least 1 item"),
        ({"slice": ["*"]}, "slice\n  Extra inputs are not permitted"),
    ],
)
def test_bad_policies_are_rejected_naming_the_key(spec, message):
    with pytest.raises(ValidationError) as info:
        AlertPolicy.model_validate({"name": "p", **spec})
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"min_healthy_windows": 0}, "min_healthy_windows\n  Input should be greater than or equal to 1"),
        ({"min_events": -1}, "min_events\n  Input should be greater than or equal to 0"),
        ({"min_healthy": 3}, "min_healthy\n  Extra inputs are not permitted"),
    ],
)
def test_bad_rollback_rails_are_rejected_naming_the_key(spec, message):
    with pytest.raises(ValidationError) as info:
        AlertingConfig.model_validate({"rollback": spec})
    assert message in str(info.value)
