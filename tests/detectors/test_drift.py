"""Univariate drift statistics against scipy on raw samples, and the detector's false-alarm rate and power."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import euclidean, jensenshannon

from driftline.detectors.drift import (
    UnivariateDrift,
    benjamini_hochberg,
    chi2_categorical,
    hellinger,
    jensen_shannon,
    ks_from_bins,
    ks_p_value,
    psi,
    wasserstein_from_bins,
)
from driftline.detectors.summaries import ReferenceProfile, WindowSummary


def _bins(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Counts in the summaries' layout: bins[i] holds x with searchsorted(edges, x, 'right') == i."""
    return np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)


def _quantile_edges(sample: np.ndarray, n_bins: int) -> np.ndarray:
    return np.unique(np.quantile(sample, np.linspace(0, 1, n_bins + 1)))


SAMPLERS = {
    "normal": lambda rng, n: rng.normal(size=n),
    "shifted": lambda rng, n: rng.normal(0.3, 1.0, size=n),
    "wide": lambda rng, n: rng.normal(0.0, 1.6, size=n),
    "exponential": lambda rng, n: rng.exponential(size=n),
    "bimodal": lambda rng, n: np.where(rng.random(n) < 0.3, rng.normal(-2, 0.5, n), rng.normal(1, 0.7, n)),
}
PAIRS = [("normal", "normal"), ("normal", "shifted"), ("normal", "wide"), ("normal", "bimodal"),
         ("exponential", "normal")]


@pytest.mark.parametrize(("a", "b"), PAIRS)
@pytest.mark.parametrize("n_bins", [5, 20, 100])
def test_ks_from_bins_brackets_exact_ks_2samp(a: str, b: str, n_bins: int) -> None:
    rng = np.random.default_rng(n_bins)
    edges = _quantile_edges(SAMPLERS["normal"](rng, 2000), n_bins)
    x, y = SAMPLERS[a](rng, 3000), SAMPLERS[b](rng, 1500)
    ref, cur = _bins(edges, x), _bins(edges, y)
    r = ks_from_bins(ref, cur)
    exact = stats.ks_2samp(x, y).statistic
    max_mass = max((ref / ref.sum()).max(), (cur / cur.sum()).max())
    assert r.statistic <= exact + 1e-12
    assert exact <= r.upper_bound + 1e-12
    assert r.upper_bound <= r.statistic + max_mass + 1e-12


def test_ks_from_bins_equals_ks_2samp_when_every_value_has_its_own_bin() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.poisson(6, 4000), rng.poisson(6.3, 2500)
    edges = np.arange(-0.5, max(x.max(), y.max()) + 1.0)
    r = ks_from_bins(_bins(edges, x), _bins(edges, y))
    exact = stats.ks_2samp(x, y, method="asymp")
    assert r.statistic == pytest.approx(exact.statistic, abs=1e-12)
    assert r.p_value == pytest.approx(exact.pvalue, rel=1e-9)
    assert r.p_value < 0.01


def test_ks_p_value_is_scipy_asymptotic_formula() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=700), rng.normal(0.1, size=1100)
    exact = stats.ks_2samp(x, y, method="asymp")
    assert ks_p_value(exact.statistic, x.size, y.size) == pytest.approx(exact.pvalue, rel=1e-12)


@pytest.mark.parametrize(("a", "b"), PAIRS)
@pytest.mark.parametrize("n_bins", [10, 50])
def test_wasserstein_from_bins_within_bound_of_scipy(a: str, b: str, n_bins: int) -> None:
    rng = np.random.default_rng(100 + n_bins)
    edges = _quantile_edges(SAMPLERS["normal"](rng, 2000), n_bins)
    x, y = SAMPLERS[a](rng, 4000), SAMPLERS[b](rng, 2000)
    closed = np.concatenate(([min(x.min(), y.min(), edges[0])], edges, [max(x.max(), y.max(), edges[-1])]))
    r = wasserstein_from_bins(closed, _bins(edges, x), _bins(edges, y))
    exact = stats.wasserstein_distance(x, y)
    assert abs(r.distance - exact) <= r.max_error
    assert r.max_error <= 1.5 * np.diff(closed).max() + 1e-12


def test_wasserstein_from_bins_converges_with_fine_bins() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 1, 50_000), rng.uniform(0.2, 1.1, 50_000)
    edges = np.linspace(0, 1.1, 1101)
    r = wasserstein_from_bins(edges, _bins(edges, x)[1:-1], _bins(edges, y)[1:-1])
    assert r.max_error < 0.0015
    assert r.distance == pytest.approx(stats.wasserstein_distance(x, y), abs=r.max_error)
    assert r.distance == pytest.approx(0.15, abs=0.005)


def test_wasserstein_error_bound_is_nearly_attained() -> None:
    # Reference mass at a bin's left edge, window mass at its right edge: spreading each uniformly over the
    # bin sees no difference while the truth is almost the bin width, which the bound (w) must still cover.
    x, y = np.zeros(1000), np.full(1000, 0.999)
    r = wasserstein_from_bins([0.0, 1.0], [x.size], [y.size])
    exact = stats.wasserstein_distance(x, y)
    assert r.distance == 0.0
    assert exact <= r.max_error < exact + 0.01


@pytest.mark.parametrize("seed", range(5))
def test_jensen_shannon_matches_scipy_on_histograms_of_raw_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    edges = _quantile_edges(rng.normal(size=1000), 30)
    ref, cur = _bins(edges, rng.normal(size=5000)), _bins(edges, rng.standard_t(3, size=800))
    cur[5] = 0
    assert jensen_shannon(ref, cur) == pytest.approx(jensenshannon(ref, cur, base=2), abs=1e-12)
    assert jensen_shannon(ref, ref) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("seed", range(5))
def test_psi_is_symmetric_kl_and_hellinger_is_root_half_euclidean(seed: int) -> None:
    rng = np.random.default_rng(seed)
    edges = _quantile_edges(rng.normal(size=1000), 20)
    ref, cur = _bins(edges, rng.normal(size=20_000)), _bins(edges, rng.normal(0.2, 1.1, size=20_000))
    assert ref.min() > 0 and cur.min() > 0
    p, q = ref / ref.sum(), cur / cur.sum()
    assert psi(ref, cur) == pytest.approx(stats.entropy(p, q) + stats.entropy(q, p), rel=1e-10)
    assert hellinger(ref, cur) == pytest.approx(euclidean(np.sqrt(p), np.sqrt(q)) / np.sqrt(2), rel=1e-10)


def test_psi_is_finite_with_empty_bins_and_floor_matters() -> None:
    assert np.isfinite(psi([10, 0, 10], [5, 5, 10]))
    assert psi([10, 0, 10], [5, 5, 10], eps=1e-6) > psi([10, 0, 10], [5, 5, 10], eps=1e-2)


@pytest.mark.parametrize("seed", range(5))
def test_chi2_categorical_matches_chi2_contingency(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 8
    ref = np.bincount(rng.choice(k, 3000, p=np.full(k, 1 / k)), minlength=k + 2)
    cur = np.bincount(rng.choice(k, 700, p=rng.dirichlet(np.full(k, 20.0))), minlength=k + 2)
    r = chi2_categorical(ref, cur)
    table = np.vstack((ref, cur))
    expected = stats.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)
    assert r.statistic == pytest.approx(expected.statistic, rel=1e-10)
    assert r.p_value == pytest.approx(expected.pvalue, rel=1e-8, abs=1e-300)
    assert r.dof == expected.dof == k - 1


def test_chi2_two_categories_has_no_yates_correction_and_one_category_is_no_test() -> None:
    table = np.array([[120, 80], [45, 55]])
    assert chi2_categorical(*table).statistic == pytest.approx(
        stats.chi2_contingency(table, correction=False).statistic
    )
    assert chi2_categorical([10, 0], [3, 0]) == (0.0, 1.0, 0)


def test_benjamini_hochberg_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    p = np.concatenate((rng.random(40), rng.random(10) * 1e-3, [0.5, 0.5]))
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p), rtol=1e-12)
    assert benjamini_hochberg([]).size == 0


def test_histograms_must_align_and_be_counts() -> None:
    with pytest.raises(ValueError, match="differ"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        jensen_shannon([1, -1], [1, 1])
    with pytest.raises(ValueError, match="positive total"):
        ks_from_bins([0, 0], [1, 1])
    with pytest.raises(ValueError, match="edges"):
        wasserstein_from_bins([0.0, 1.0], [1, 2], [2, 1])


# ---- the detector, on real window summaries -------------------------------------------------------------

CLASSES = ("no", "yes")


def _events(rng: np.random.Generator, n: int, shift: float = 0.0, score_shift: float = 0.0) -> dict:
    """One batch of a stationary model's traffic: mixed-shape numeric features, a categorical, scores."""
    numeric = {
        "normal": rng.normal(shift, 1.0, n),
        "skewed": rng.exponential(size=n),
        "heavy": rng.standard_t(4, n),
        "counts": rng.poisson(3, n).astype(np.float64),
    }
    categorical = {"city": rng.choice(np.array(["a", "b", "c", "d"]), n, p=[0.4, 0.3, 0.2, 0.1]).tolist()}
    return {"numeric": numeric, "categorical": categorical, "scores": rng.beta(2 + score_shift, 3, n)}


def _summarize(profile: ReferenceProfile, batch: dict) -> WindowSummary:
    return WindowSummary.of(profile, batch["numeric"], batch["categorical"], scores=batch["scores"])


def _world(seed: int, n_ref: int = 50_000) -> tuple[np.random.Generator, ReferenceProfile, WindowSummary]:
    """Edges fitted on one reference sample, the reference summary taken of another."""
    rng = np.random.default_rng(seed)
    fit = _events(rng, n_ref)
    profile = ReferenceProfile.fit(fit["numeric"], fit["categorical"], classes=CLASSES)
    return rng, profile, _summarize(profile, _events(rng, n_ref))


def test_false_alarm_rate_on_stationary_data_is_at_most_alpha() -> None:
    alpha, seeds, windows, size = 0.01, 10, 60, 5000
    alarms = {"gated": 0, "p_value_only": 0}
    for seed in range(seeds):
        rng, profile, reference = _world(seed)
        detectors = {
            "gated": UnivariateDrift(reference, alpha=alpha),
            "p_value_only": UnivariateDrift(reference, alpha=alpha, psi_floor=np.inf, js_floor=0.0),
        }
        for _ in range(windows):
            window = _summarize(profile, _events(rng, size))
            for name, detector in detectors.items():
                findings = detector.update(window)
                assert len([f for f in findings if f.p_value is not None]) == 7
                alarms[name] += detector.drift_detected
    total = seeds * windows
    assert total * size >= 1_000_000
    bound = alpha + 3 * np.sqrt(alpha * (1 - alpha) / total)
    assert alarms["p_value_only"] / total <= bound, alarms
    assert alarms["gated"] <= alarms["p_value_only"]


def test_power_against_a_small_mean_shift_in_one_feature() -> None:
    rng, profile, reference = _world(100)
    detector = UnivariateDrift(reference)
    flagged, others = 0, 0
    windows = 100
    for _ in range(windows):
        findings = detector.update(_summarize(profile, _events(rng, 5000, shift=0.2)))
        breached = {f.feature for f in findings if f.breached}
        flagged += "normal" in breached
        others += len(breached - {"normal"})
    assert flagged >= 0.95 * windows
    assert others <= 3


def test_huge_window_does_not_alarm_on_a_trivial_shift() -> None:
    rng, profile, reference = _world(200, n_ref=1_000_000)
    window = _summarize(profile, _events(rng, 1_000_000, shift=0.02))
    ks = {f.feature: f for f in UnivariateDrift(reference).update(window) if f.metric == "ks"}["normal"]
    assert ks.detail["significant"] and ks.p_value < 1e-6
    assert not ks.detail["large_effect"] and not ks.breached
    ungated = UnivariateDrift(reference, psi_floor=np.inf, js_floor=0.0).update(window)
    assert {f.feature for f in ungated if f.breached} == {"normal"}


def test_windows_below_min_samples_are_not_tested() -> None:
    rng, profile, reference = _world(300)
    detector = UnivariateDrift(reference, min_samples=200)
    assert detector.update(_summarize(profile, _events(rng, 199, shift=3.0))) == []
    assert not detector.drift_detected
    findings = detector.update(_summarize(profile, _events(rng, 200, shift=3.0)))
    assert {f.feature for f in findings if f.breached} == {"normal"}
    assert detector.drift_detected


def test_findings_layout_and_values_match_the_statistics_of_the_raw_window() -> None:
    rng, profile, reference = _world(400)
    ref_batch = _events(np.random.default_rng(401), 50_000)
    reference = _summarize(profile, ref_batch)
    batch = _events(rng, 5000, shift=0.5)
    findings = UnivariateDrift(reference).update(_summarize(profile, batch))
    by = {(f.metric, f.feature): f for f in findings}
    assert {m for m, _ in by} == {"ks", "psi", "jensen_shannon", "hellinger", "wasserstein", "chi2", "prediction_drift"}
    for f in findings:
        if f.metric in ("psi", "jensen_shannon", "hellinger", "wasserstein"):
            assert f.threshold is None and not f.breached and f.p_value is None
        else:
            assert f.threshold == 0.01 and f.p_value is not None and "q_value" in f.detail
    x, y = ref_batch["numeric"]["normal"], batch["numeric"]["normal"]
    ks = by[("ks", "normal")]
    assert ks.breached and ks.value <= stats.ks_2samp(x, y).statistic <= ks.detail["upper_bound"]
    w1 = by[("wasserstein", "normal")]
    assert abs(w1.value - stats.wasserstein_distance(x, y)) <= w1.detail["max_error"]
    assert w1.value == pytest.approx(0.5, abs=0.1)
    table = [[(np.array(b["categorical"]["city"]) == c).sum() for c in "abcd"] for b in (ref_batch, batch)]
    chi2 = by[("chi2", "city")]
    assert chi2.value == pytest.approx(stats.chi2_contingency(table, correction=False).statistic, rel=1e-10)
    assert not chi2.breached


def test_categorical_and_prediction_drift_are_flagged() -> None:
    rng, profile, reference = _world(500)
    batch = _events(rng, 5000, score_shift=1.5)
    batch["categorical"]["city"] = rng.choice(np.array(["a", "b", "c", "d", "new"]), 5000,
                                              p=[0.25, 0.3, 0.2, 0.1, 0.15]).tolist()
    findings = UnivariateDrift(reference).update(_summarize(profile, batch))
    breached = {(f.metric, f.feature) for f in findings if f.breached}
    assert breached == {("chi2", "city"), ("prediction_drift", "score"), ("prediction_drift", "predicted_label")}


def test_regression_prediction_drift() -> None:
    rng = np.random.default_rng(600)
    profile = ReferenceProfile.fit({"x": rng.normal(size=20_000)}, values=rng.gamma(2.0, size=20_000))
    reference = WindowSummary.of(profile, {"x": rng.normal(size=20_000)}, values=rng.gamma(2.0, size=20_000))
    detector = UnivariateDrift(reference)
    same = detector.update(WindowSummary.of(profile, {"x": rng.normal(size=5000)}, values=rng.gamma(2.0, size=5000)))
    moved = detector.update(WindowSummary.of(profile, {"x": rng.normal(size=5000)}, values=rng.gamma(2.6, size=5000)))
    assert [(f.feature, f.breached) for f in same if f.metric == "prediction_drift"] == [("prediction", False)]
    assert [(f.feature, f.breached) for f in moved if f.metric == "prediction_drift"] == [("prediction", True)]


def test_state_round_trip_is_json_safe_and_gives_the_same_findings() -> None:
    rng, profile, reference = _world(700, n_ref=5000)
    detector = UnivariateDrift(reference, alpha=0.05, psi_floor=0.2, js_floor=0.1, min_samples=300)
    state = json.loads(json.dumps(detector.state_dict()))
    restored = UnivariateDrift.from_state(state)
    window = _summarize(profile, _events(rng, 3000, shift=0.3))
    assert restored.update(window) == detector.update(window)
    assert (restored.alpha, restored.psi_floor, restored.js_floor, restored.min_samples) == (0.05, 0.2, 0.1, 300)


def test_window_binned_on_another_profile_is_rejected() -> None:
    _, _, reference = _world(800, n_ref=5000)
    rng, other, _ = _world(801, n_ref=5000)
    with pytest.raises(ValueError, match="different edges"):
        UnivariateDrift(reference).update(_summarize(other, _events(rng, 1000)))
