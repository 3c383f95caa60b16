"""Data-quality detectors: p-values against scipy, false-alarm rate on >= 1M stationary events, power."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest
from scipy import stats

from driftline.detectors.findings import Detector
from driftline.detectors.quality import (
    MissingRateDetector,
    OutOfRangeDetector,
    TypeErrorDetector,
    UnseenCategoryDetector,
    proportion_increase_pvalue,
    two_proportion_z,
)
from driftline.detectors.summaries import ReferenceProfile, WindowSummary

CASES = [(60, 1000, 500, 10000), (3, 1000, 0, 10000), (0, 500, 10, 500), (40, 400, 4000, 40000),
         (1, 100, 1, 100000), (250, 1000, 200, 1000), (999, 1000, 5, 20000)]


@pytest.mark.parametrize(("count", "n", "ref_count", "ref_n"), CASES)
def test_z_test_matches_an_independent_scipy_norm_computation(count: int, n: int, ref_count: int, ref_n: int) -> None:
    p1, p2 = count / n, ref_count / ref_n
    pooled = (count + ref_count) / (n + ref_n)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / ref_n))
    assert math.isclose(two_proportion_z(count, n, ref_count, ref_n), z, rel_tol=1e-12)
    expected = stats.norm.sf(z) if count else 1.0
    assert math.isclose(proportion_increase_pvalue(count, n, ref_count, ref_n, "z"), expected, rel_tol=1e-9)


@pytest.mark.parametrize(("count", "n", "ref_count", "ref_n"), CASES)
def test_exact_test_matches_scipy_fisher_exact(count: int, n: int, ref_count: int, ref_n: int) -> None:
    table = [[count, n - count], [ref_count, ref_n - ref_count]]
    expected = stats.fisher_exact(table, alternative="greater").pvalue
    assert math.isclose(proportion_increase_pvalue(count, n, ref_count, ref_n), expected, rel_tol=1e-6, abs_tol=1e-300)


def _size(method: str, rate: float, n: int, ref_n: int, level: float) -> float:
    """Exact false-alarm probability: sum over both binomial counts (rejection region found by bisection)."""
    refs = np.arange(ref_n + 1)
    weights = stats.binom.pmf(refs, ref_n, rate)
    total = 0.0
    for r in refs[weights > 1e-12]:
        lo, hi = 0, n + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if proportion_increase_pvalue(mid, n, int(r), ref_n, method) <= level:  # type: ignore[arg-type]
                hi = mid
            else:
                lo = mid + 1
        total += weights[r] * stats.binom.sf(lo - 1, n, rate)
    return total


@pytest.mark.parametrize("rate", [0.001, 0.02, 0.1])
def test_exact_test_size_never_exceeds_the_level_where_the_z_test_does(rate: float) -> None:
    level = 0.001
    assert _size("exact", rate, 1000, 20000, level) <= level
    assert _size("z", rate, 1000, 20000, level) > 1.2 * level, "why the exact test is the default"


def _stream(rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Stationary traffic: common and rare missingness, heavy tails, discrete values, a long-tailed category."""

    def missing(x: np.ndarray, rate: float) -> np.ndarray:
        x[rng.random(n) < rate] = np.nan
        return x

    numeric = {
        "normal": missing(rng.normal(size=n), 0.05),
        "lognormal": rng.lognormal(0, 2, n),
        "counts": missing(rng.poisson(3, n).astype(np.float64), 0.002),
        "uniform": missing(rng.uniform(size=n), 0.0005),
    }
    color = rng.choice(np.array(["red", "green", "blue"], dtype=object), n)
    color[rng.random(n) < 0.1] = None
    return numeric, {"zipf": rng.zipf(1.6, n).astype(str).astype(object), "color": color}


def test_false_alarm_rate_on_one_million_stationary_events() -> None:
    """Windows of one seed share its reference (correlated verdicts), hence many seeds with few windows each."""
    alphas, window, seeds, per_seed = (0.001, 0.01), 1000, 20, 50_000
    kinds = (MissingRateDetector, OutOfRangeDetector, UnseenCategoryDetector)
    alarms = {(a, k.__name__): 0 for a in alphas for k in kinds}
    windows = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        numeric, categorical = _stream(rng, 20_000)
        profile = ReferenceProfile.fit(numeric, categorical)
        reference = WindowSummary.of(profile, numeric, categorical)
        detectors = {(a, k.__name__): k(reference, alpha=a) for a in alphas for k in kinds}
        numeric, categorical = _stream(rng, per_seed)
        for start in range(0, per_seed, window):
            cut = slice(start, start + window)
            summary = WindowSummary.of(profile, {f: v[cut] for f, v in numeric.items()},
                                        {f: v[cut] for f, v in categorical.items()})
            windows += 1
            for key, det in detectors.items():
                alarms[key] += any(f.breached for f in det.update(summary))
    assert windows * window >= 1_000_000
    for (alpha, name), count in alarms.items():
        rate, se = count / windows, math.sqrt(alpha * (1 - alpha) / windows)
        assert rate <= alpha + 3 * se, f"{name} at alpha={alpha}: {count}/{windows} windows alarmed"


def test_out_of_range_false_alarm_rate_with_a_small_reference() -> None:
    """Where the leave-one-out correction matters most: windows not much smaller than the reference."""
    alpha, windows, events = 0.001, 0, 0
    alarms = 0
    for seed in range(400):
        rng = np.random.default_rng(1000 + seed)
        data = {"normal": rng.normal(size=2000), "exponential": rng.exponential(size=2000)}
        profile = ReferenceProfile.fit(data)
        detector = OutOfRangeDetector(WindowSummary.of(profile, data), alpha=alpha)
        for _ in range(10):
            window = WindowSummary.of(profile,
                                      {"normal": rng.normal(size=500), "exponential": rng.exponential(size=500)})
            alarms += detector.update(window) != [] and detector.drift_detected
            windows += 1
            events += 500
    assert events >= 2_000_000
    assert alarms / windows <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / windows), f"{alarms}/{windows}"


def _reference(seed: int = 0) -> tuple[ReferenceProfile, WindowSummary, np.random.Generator]:
    rng = np.random.default_rng(seed)
    numeric, categorical = _stream(rng, 20_000)
    profile = ReferenceProfile.fit(numeric, categorical)
    return profile, WindowSummary.of(profile, numeric, categorical), rng


def _by_feature(findings: list[Any]) -> dict[str, Any]:
    return {f.feature: f for f in findings}


def test_missing_rate_increase_is_detected_with_bonferroni_threshold() -> None:
    profile, reference, rng = _reference()
    detector = MissingRateDetector(reference)
    numeric, categorical = _stream(rng, 5000)
    numeric["uniform"][:50] = np.nan
    found = _by_feature(detector.update(WindowSummary.of(profile, numeric, categorical)))
    assert set(found) == {"normal", "lognormal", "counts", "uniform", "zipf", "color"}
    assert found["uniform"].breached and detector.drift_detected
    assert not any(f.breached for name, f in found.items() if name != "uniform")
    assert all(f.threshold == pytest.approx(0.001 / 6) for f in found.values())
    assert found["uniform"].detail["reference_rate"] == pytest.approx(0.0005, abs=0.0005)
    small = WindowSummary.of(profile, {k: v[:50] for k, v in numeric.items()},
                             {k: v[:50] for k, v in categorical.items()})
    assert detector.update(small) == [], "windows under min_count are not tested"


def test_out_of_range_uses_the_leave_one_out_reference_count() -> None:
    profile, reference, rng = _reference()
    detector = OutOfRangeDetector(reference)
    assert all(reference.numeric[f].out_of_range == 0 for f in reference.numeric)
    assert detector.reference["normal"][0] == 2, "both reference extremes sit on the range boundary"
    numeric, categorical = _stream(rng, 1000)
    numeric["normal"][:3] = [1e3, -1e3, 1e3]
    found = _by_feature(detector.update(WindowSummary.of(profile, numeric, categorical)))
    assert not found["normal"].breached
    naive = proportion_increase_pvalue(3, found["normal"].detail["n"], 0, reference.numeric["normal"].count)
    assert naive < found["normal"].threshold, "without the correction 3 values beyond the range would alarm"
    numeric["normal"] = rng.normal(0, 2, 1000)
    assert _by_feature(detector.update(WindowSummary.of(profile, numeric, categorical)))["normal"].breached


def test_unseen_categories_are_detected_and_listed() -> None:
    profile, reference, rng = _reference()
    detector = UnseenCategoryDetector(reference)
    singletons = int(np.count_nonzero(reference.categorical["zipf"].counts == 1))
    assert detector.reference["zipf"][0] == reference.categorical["zipf"].other + singletons > 0
    numeric, categorical = _stream(rng, 2000)
    categorical["color"][:30] = "purple"
    categorical["color"][30:35] = "teal"
    found = _by_feature(detector.update(WindowSummary.of(profile, numeric, categorical)))
    assert found["color"].breached and not found["zipf"].breached
    assert found["color"].detail["top_unseen"] == [("purple", 30), ("teal", 5)]


def test_type_errors_breach_above_reference_rate_plus_tolerance() -> None:
    profile = ReferenceProfile.fit({"x": np.arange(100.0)}, {"c": ["a"] * 100})
    reference = WindowSummary.of(profile, {"x": np.arange(100.0)}, {"c": ["a"] * 99 + [1]})
    detector = TypeErrorDetector(reference, tolerance=0.02)
    clean = WindowSummary.of(profile, {"x": np.arange(100.0)}, {"c": ["a"] * 100})
    assert detector.update(clean) == [] and not detector.drift_detected
    window = WindowSummary.of(profile, {"x": np.arange(100.0)}, {"c": ["a"] * 97 + [1, 2, 3], "x": [None] * 99 + ["s"]})
    found = _by_feature(detector.update(window))
    assert not found["c"].breached and found["c"].threshold == pytest.approx(0.03)
    assert found["x"].value == 0.01 and not found["x"].breached
    assert TypeErrorDetector(reference).update(window)[1].breached


@pytest.mark.parametrize("kind", [MissingRateDetector, OutOfRangeDetector, UnseenCategoryDetector, TypeErrorDetector])
def test_state_round_trips_through_json(kind: type) -> None:
    profile, reference, rng = _reference(1)
    detector = kind(reference)
    assert isinstance(detector, Detector)
    restored = kind.from_state(orjson.loads(orjson.dumps(detector.state_dict())))
    numeric, categorical = _stream(rng, 3000)
    numeric["normal"][:300] = np.nan
    categorical["color"][:10] = 7
    window = WindowSummary.of(profile, numeric, categorical)
    assert restored.update(window) == detector.update(window)


def test_invalid_settings_are_rejected() -> None:
    _, reference, _ = _reference()
    with pytest.raises(ValueError, match="alpha"):
        MissingRateDetector(reference, alpha=0.0)
    with pytest.raises(ValueError, match="method"):
        MissingRateDetector(reference, method="t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance"):
        TypeErrorDetector(reference, tolerance=-1)
