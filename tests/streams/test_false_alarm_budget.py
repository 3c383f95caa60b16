"""The model's false-alarm budget applied by `streams.pipeline.evaluate`: its configuration section, the levels the
window families are built at, the explicit-knob and MMD rules, `sequential_kwargs`, and the measurement: stationary
windows of a classifier counted per family against the budget's Poisson 99 % interval."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
import pytest
from scipy import stats

from driftline.detectors.budget import FalseAlarmBudget
from driftline.detectors.summaries import ReferenceProfile, WindowSummary
from driftline.errors import ConfigError
from driftline.streams.config.model_config import MonitoringConfig, ResolvedModelConfig
from driftline.streams.pipeline.evaluate import FAMILIES, build_detectors, plan_budget, sequential_kwargs

NUMERIC = ("x0", "x1", "x2", "x3")
WEIGHTS = np.array([1.2, -0.8, 0.5, 0.0])
MIX = np.array([[1.0, 0.0, 0.0, 0.0], [0.6, 0.8, 0.0, 0.0], [0.0, 0.5, 0.866, 0.0], [0.3, 0.0, 0.4, 0.866]])
PLANS, PLAN_P = ["basic", "plus", "pro", "team"], [0.5, 0.3, 0.15, 0.05]
REGIONS, DEVICES = ["north", "south", "east", "west"], ["ios", "android", "web"]
CLASS_OF = {cls: path for path, cls in FAMILIES.items()}


def resolve(defaults: dict[str, Any], window_seconds: int | None = 60) -> ResolvedModelConfig:
    if window_seconds is not None:
        defaults = {"window_seconds": window_seconds, **defaults}
    return MonitoringConfig.from_dict({"defaults": defaults}).resolve(f"m-{uuid.uuid4()}", "1")


def summarize(profile: ReferenceProfile, rng: np.random.Generator, n: int, shift: float = 0.0,
              flip: float = 0.0) -> WindowSummary:
    """n events of the issue's classifier: 4 correlated numeric features (x0 2 % missing), a categorical plan, two
    segment attributes, a calibrated binary model with every label in; `shift` moves x2 by that many sd, `flip`
    flips that share of the labels (an accuracy drop)."""
    x = rng.standard_normal((n, 4)) @ MIX.T
    x[:, 2] += shift
    p = 1 / (1 + np.exp(-(x @ WEIGHTS)))
    truth = (rng.random(n) < p) ^ (rng.random(n) < flip)
    x[rng.random(n) < 0.02, 0] = np.nan
    numeric = {name: x[:, i] for i, name in enumerate(NUMERIC)}
    categorical = {"plan": rng.choice(PLANS, n, p=PLAN_P).tolist()}
    segments = {"region": rng.choice(REGIONS, n).tolist(), "device": rng.choice(DEVICES, n).tolist()}
    predicted = np.where(p > 0.5, "yes", "no").tolist()
    s = WindowSummary.empty(profile)
    ids = [uuid.UUID(int=int(i)).hex for i in rng.integers(0, 2**63, n)]
    s.add_predictions(ids, numeric, categorical, scores=p, predicted=predicted, segments=segments)
    s.add_labels(labels=np.where(truth, "yes", "no").tolist(), predicted=predicted, scores=p, segments=segments)
    return s


def reference(seed: int, n: int = 10_000) -> tuple[ReferenceProfile, WindowSummary]:
    """A stored reference of n events of the same distribution: its profile and its summary."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)) @ MIX.T
    profile = ReferenceProfile.fit({name: x[:, i] for i, name in enumerate(NUMERIC)},
                                   {"plan": rng.choice(PLANS, n, p=PLAN_P).tolist()}, classes=["no", "yes"])
    return profile, summarize(profile, rng, n)


@pytest.fixture(scope="module")
def stored() -> tuple[ReferenceProfile, WindowSummary]:
    return reference(0)


@pytest.fixture(scope="module")
def ref(stored) -> WindowSummary:
    return stored[1]


def levels(detectors: list[Any]) -> dict[str, float]:
    return {CLASS_OF[type(d)]: getattr(d, "fdr", getattr(d, "alpha", None)) for d in detectors}


# --- configuration ----------------------------------------------------------------------------------------


def test_the_section_defaults_to_one_alarm_per_30_days_half_sequential():
    budget = resolve({}).false_alarm_budget
    assert (budget.enabled, budget.alarms, budget.days, budget.sequential_share) == (True, 1.0, 30.0, 0.5)
    assert budget.budget() == FalseAlarmBudget()
    assert resolve({}).tick_lateness_seconds == 2.0


@pytest.mark.parametrize(("section", "key"), [
    ({"alarms": 0}, "alarms"), ({"days": -1}, "days"), ({"sequential_share": 1.5}, "sequential_share"),
    ({"enabled": "maybe"}, "enabled"), ({"alarm": 2}, "alarm"), ({"days": ".nan"}, "days"),
])
def test_bad_values_name_the_key(section, key):
    with pytest.raises(ConfigError, match=rf"models\.m\.false_alarm_budget\.{key}"):
        MonitoringConfig.from_dict({"models": {"m": {"false_alarm_budget": section}}})


def test_writing_a_budgeted_knob_at_its_default_changes_the_version():
    # It takes its family out of the budget, so it changes a result; a non-budgeted default written out does not.
    plain = resolve({})
    assert resolve({"detectors": {"drift": {"psi_floor": 0.1}}}).version == plain.version
    assert resolve({"detectors": {"drift": {"alpha": 0.01}}}).version != plain.version
    assert resolve({"false_alarm_budget": {"days": 30.0}}).version == plain.version


# --- levels -----------------------------------------------------------------------------------------------


def test_every_family_the_reference_supports_runs_at_the_budgeted_level_mmd_left_out(ref, caplog):
    cfg = resolve({})
    with caplog.at_level(logging.WARNING, logger="driftline.evaluate"):
        built = levels(build_detectors(ref, cfg))
    level = FalseAlarmBudget().per_window(60, families=9)
    assert "multivariate.mmd" not in built and "MMDDrift not used" in caplog.text and "1/201" in caplog.text
    assert built.pop("quality.type_errors") is None  # a tolerance, no level
    assert built == pytest.approx({p: level for p in FAMILIES if p not in ("multivariate.mmd", "quality.type_errors")},
                                  rel=1e-12)
    assert level == pytest.approx(1.286e-6, rel=1e-3)


def test_explicit_knobs_win_and_take_no_share(ref):
    cfg = resolve({"detectors": {"drift": {"alpha": 0.02}, "slices": {"fdr": 0.1},
                                 "multivariate": {"mmd": {"alpha": 0.01}}}})
    built = levels(build_detectors(ref, cfg))
    assert (built["drift"], built["slices"], built["multivariate.mmd"]) == (0.02, 0.1, 0.01)
    level = FalseAlarmBudget().per_window(60, families=7)
    assert built["quality.missing"] == pytest.approx(level, rel=1e-12)
    plan = plan_budget(cfg, [p for p in FAMILIES if p != "quality.type_errors"])
    assert plan.explicit == {"drift": 0.02, "slices": 0.1, "multivariate.mmd": 0.01}
    assert "drift at its own 0.02, not bounded by the budget" in plan.describe()


def test_only_the_families_built_share_the_budget(stored):
    profile, ref = stored
    off = {"enabled": False}
    cfg = resolve({"detectors": {"calibration": off, "performance": {"drop": off, "estimated_accuracy": off}}})
    assert sorted(set(levels(build_detectors(ref, cfg)).values()) - {None}) == pytest.approx(
        [FalseAlarmBudget().per_window(60, families=6)], rel=1e-12)
    unlabelled = WindowSummary.empty(profile)  # no classifier outputs, no labels
    rng = np.random.default_rng(1)
    unlabelled.add_predictions(None, {n: rng.standard_normal(500) for n in NUMERIC}, {"plan": ["basic"] * 500})
    built = levels(build_detectors(unlabelled, resolve({})))
    # Slices against the rest of the window need no labelled reference; the other label families are refused.
    assert set(built) == {"drift", "quality.missing", "quality.out_of_range", "quality.unseen", "quality.type_errors",
                          "multivariate.pca", "slices"}
    assert built["drift"] == pytest.approx(FalseAlarmBudget().per_window(60, families=6), rel=1e-12)


def test_mmd_runs_under_the_budget_when_its_permutations_reach_the_level(ref):
    # 9 families + MMD at 0.01 each per 60 s window: 200 permutations reach 1/201 <= 0.01.
    days = 0.5 * 60 / (10 * 0.01 * 86_400)
    built = levels(build_detectors(ref, resolve({"false_alarm_budget": {"days": days}})))
    assert built["multivariate.mmd"] == pytest.approx(0.01, rel=1e-9) == built["drift"]


def test_disabled_the_families_run_at_their_own_knobs(ref):
    built = levels(build_detectors(ref, resolve({"false_alarm_budget": {"enabled": False}})))
    assert built["drift"] == 0.01 and built["quality.missing"] == 0.001 and built["slices"] == 0.05
    assert built["multivariate.mmd"] == 0.01


def test_a_window_size_left_to_the_worker_is_its_default(ref):
    cfg = resolve({}, window_seconds=None)
    assert cfg.window_seconds is None
    assert levels(build_detectors(ref, cfg))["drift"] == pytest.approx(FalseAlarmBudget().per_window(60, 9))
    cfg = resolve({}, window_seconds=300)
    assert levels(build_detectors(ref, cfg))["drift"] == pytest.approx(FalseAlarmBudget().per_window(300, 9))


def test_sequential_kwargs_take_the_per_tick_budget_unless_set():
    cfg = resolve({"tick_seconds": 4, "false_alarm_budget": {"alarms": 2.0, "sequential_share": 0.25}})
    kwargs = sequential_kwargs(cfg)
    assert kwargs["false_alarm_rate"] == pytest.approx(FalseAlarmBudget(2.0, 30.0, 0.25).per_tick(4), rel=1e-15)
    assert {k: v for k, v in kwargs.items() if k != "false_alarm_rate"} == {
        k: v for k, v in cfg.detectors.sequential.kwargs().items() if k != "false_alarm_rate"}
    assert sequential_kwargs(resolve({"detectors": {"sequential": {"false_alarm_rate": 1e-3}}}))[
        "false_alarm_rate"] == 1e-3
    off = resolve({"false_alarm_budget": {"enabled": False}})
    assert sequential_kwargs(off) == off.detectors.sequential.kwargs()


# --- measurement: stationary windows against the budget ---------------------------------------------------

REFERENCES, WINDOWS, WINDOW_EVENTS = 5, 60, 2_000
FAMILY_LEVEL = 0.01  # per family and window: 10 families x 300 windows = 30 expected false alarms


def scaled_days(families: int, level: float, window_seconds: int = 60, share: float = 0.5) -> float:
    """The `days` of a one-alarm budget whose window families each run at `level`."""
    return (1 - share) * window_seconds / (families * level * 86_400)


def count_alarms(config: dict[str, Any]) -> tuple[dict[str, int], int, float]:
    """Per family, the stationary windows with a breached finding; windows with any; the expected count."""
    alarms = dict.fromkeys((p for p in FAMILIES if p != "quality.type_errors"), 0)
    any_breach, expected = 0, 0.0
    for seed in range(REFERENCES):
        profile, ref = reference(100 + seed)
        cfg = resolve(config)
        detectors = build_detectors(ref, cfg)
        plan = plan_budget(cfg, [CLASS_OF[type(d)] for d in detectors if CLASS_OF[type(d)] in alarms])
        expected += WINDOWS * sum(plan.levels.values())
        rng = np.random.default_rng(1000 + seed)
        for _ in range(WINDOWS):
            window = summarize(profile, rng, WINDOW_EVENTS)
            hit = {CLASS_OF[type(d)] for d in detectors if any(f.breached for f in d.update(window))}
            hit.discard("quality.type_errors")
            for family in hit:
                alarms[family] += 1
            any_breach += bool(hit)
    return alarms, any_breach, expected


def poisson99(mean: float) -> tuple[float, float]:
    low, high = stats.poisson.interval(0.99, mean)
    return float(low), float(high)


def test_stationary_windows_raise_false_alarms_within_the_budget():
    alarms, windows_hit, expected = count_alarms({"false_alarm_budget": {"days": scaled_days(10, FAMILY_LEVEL)}})
    total = sum(alarms.values())
    # What the budget promises, from its own arithmetic (not from the plan the code made).
    per_family = REFERENCES * WINDOWS * FAMILY_LEVEL
    budget = 10 * per_family
    print(f"\nstationary windows {REFERENCES * WINDOWS}, budget {budget:.1f} (99% {poisson99(budget)}), planned "
          f"{expected:.1f}: alarms {total}, windows with any {windows_hit}; per family (budget {per_family:.1f}, "
          f"99% {poisson99(per_family)}): {alarms}")
    # The budget bounds the expected count: each family at or under its share, all of them under the whole.
    for family, count in alarms.items():
        assert count <= poisson99(per_family)[1], (family, count)
    assert windows_hit <= total <= poisson99(budget)[1]
    # ... and the measurement sees alarms: the six near-exact families (missing, mmd, performance, estimated
    # accuracy, calibration, slices: sizes 0.5-1.1 x their level, detectors/README.md) spend over a third of it.
    assert total >= poisson99(budget / 3)[0] > 0
    assert expected == pytest.approx(budget, rel=1e-9)


# --- the power cost ---------------------------------------------------------------------------------------

SHIFTS = (0.1, 0.15, 0.2, 0.25, 0.3)  # x2's mean, in its sd
FLIPS = (0.04, 0.08, 0.12, 0.16, 0.2)  # share of labels flipped (accuracy drop = flip x (2 accuracy - 1))


def detection(config: dict[str, Any], family: str, changes: dict[str, float], windows: int = 8) -> float:
    profile, ref = reference(7)
    detector = next(d for d in build_detectors(ref, resolve(config)) if CLASS_OF[type(d)] == family)
    rng = np.random.default_rng(8)
    return float(np.mean([any(f.breached for f in detector.update(summarize(profile, rng, WINDOW_EVENTS, **changes)))
                          for _ in range(windows)]))


def test_the_budget_costs_power_at_small_changes_and_none_at_clear_ones():
    old = {"false_alarm_budget": {"enabled": False}}
    drift = {name: [detection(cfg, "drift", {"shift": s}) for s in SHIFTS] for name, cfg in (("old", old),
                                                                                             ("budget", {}))}
    drop = {name: [detection(cfg, "performance.drop", {"flip": f}) for f in FLIPS] for name, cfg in (("old", old),
                                                                                                     ("budget", {}))}
    print(f"\nwindows of {WINDOW_EVENTS}: drift detected at shifts {SHIFTS} sd: {drift}; accuracy drop detected at "
          f"label flips {FLIPS}: {drop}")
    for rates in (drift, drop):
        assert all(b <= o for b, o in zip(rates["budget"], rates["old"], strict=True))
        # Clear changes are still flagged in every window; the budget's price is a larger smallest change.
        first = {name: next(i for i, r in enumerate(r) if r >= 0.875) for name, r in rates.items()}
        assert rates["budget"][-1] == 1.0 and first["budget"] > first["old"]
