"""MMD against a plain numpy implementation, its p-value calibration, and the multivariate detectors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import cdist, pdist
from sklearn.decomposition import PCA

from driftline.detectors.drift import UnivariateDrift
from driftline.detectors.multivariate import REFERENCE_CONFIDENCE, MMDDrift, PCAReconstructionDrift, mmd_test
from driftline.detectors.summaries import ReferenceProfile, WindowSummary


def _numpy_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    z = np.vstack((x, y))
    h = np.median(pdist(z))
    k = np.exp(-cdist(z, z, "sqeuclidean") / (2 * h * h))
    m, n = len(x), len(y)
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


def _numpy_permutation_p(x: np.ndarray, y: np.ndarray, n_permutations: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    z, m = np.vstack((x, y)), len(x)
    observed = _numpy_mmd2(x, y)
    exceed = 0
    for _ in range(n_permutations):
        idx = rng.permutation(len(z))
        exceed += _numpy_mmd2(z[idx[:m]], z[idx[m:]]) >= observed
    return (1 + exceed) / (1 + n_permutations)


@pytest.mark.parametrize(("m", "n", "d", "shift"), [(40, 60, 1, 0.0), (100, 80, 5, 0.3), (64, 64, 20, 1.0)])
def test_mmd2_matches_numpy(m: int, n: int, d: int, shift: float) -> None:
    rng = np.random.default_rng(d)
    x, y = rng.normal(size=(m, d)), rng.normal(shift, 1.0, size=(n, d))
    mmd2, _ = mmd_test(x, y, n_permutations=10)
    assert mmd2 == pytest.approx(_numpy_mmd2(x, y), abs=1e-12, rel=1e-10)


def test_mmd_p_value_agrees_with_an_independent_numpy_permutation_test() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 2)), rng.normal(0.35, 1.0, size=(30, 2))
    _, p = mmd_test(x, y, n_permutations=2000, seed=1)
    p_numpy = _numpy_permutation_p(x, y, 2000, seed=2)
    assert 0.02 < p_numpy < 0.9
    # Two Monte Carlo estimates of one p-value: SE <= sqrt(0.25 / 2000) each, so 0.04 is > 3 SE of the gap.
    assert p == pytest.approx(p_numpy, abs=0.04)


def test_mmd_p_values_are_calibrated_under_h0() -> None:
    p = np.array(
        [
            mmd_test(rng.normal(size=(30, 3)), rng.normal(size=(30, 3)), n_permutations=200, seed=s)[1]
            for s in range(200)
            for rng in [np.random.default_rng(1000 + s)]
        ]
    )
    for alpha in (0.05, 0.1, 0.5):
        rate = np.mean(p <= alpha)
        se = np.sqrt(alpha * (1 - alpha) / p.size)
        assert abs(rate - alpha) <= 3 * se, (alpha, rate)


def test_mmd_detects_a_clear_shift_and_is_deterministic() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    y[:, 0] += 0.8
    mmd2, p = mmd_test(x, y)
    assert p < 0.01 and mmd2 > 0
    assert mmd_test(x, y) == (mmd2, p)


def test_mmd_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        mmd_test(np.array([[0.0], [np.nan]]), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="columns"):
        mmd_test(np.zeros((3, 2)), np.zeros((3, 1)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mmd_same_on_cuda_and_cpu() -> None:
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(300, 10)), rng.normal(0.1, 1.0, size=(300, 10))
    cpu, gpu = mmd_test(x, y, device="cpu"), mmd_test(x, y, device="cuda")
    assert gpu[0] == pytest.approx(cpu[0], abs=1e-5)
    assert gpu[1] == pytest.approx(cpu[1], abs=1e-5)


def test_mmd_512_by_512_in_20_dims_with_200_permutations_is_fast_on_cpu() -> None:
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(512, 20)), rng.normal(size=(512, 20))
    mmd_test(x, y, device="cpu")
    start = time.perf_counter()
    mmd_test(x, y, device="cpu")
    assert time.perf_counter() - start < 5.0


# ---- detectors on real window summaries ------------------------------------------------------------------

NAMES = ("a", "b", "c", "d", "e", "f")


def _rows(rng: np.random.Generator, n: int, rho_ab: float = 0.9, missing: float = 0.0) -> dict[str, np.ndarray]:
    """Six standard-normal marginals: (a, b) and (c, d) correlated, e and f independent."""
    def pair(rho: float) -> np.ndarray:
        return rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=n)

    ab, cd = pair(rho_ab), pair(0.7)
    cols = np.column_stack((ab, cd, rng.normal(size=(n, 2))))
    cols[rng.random(cols.shape) < missing] = np.nan
    return dict(zip(NAMES, cols.T, strict=True))


def _world(seed: int, missing: float = 0.0) -> tuple[np.random.Generator, ReferenceProfile, WindowSummary]:
    rng = np.random.default_rng(seed)
    profile = ReferenceProfile.fit(_rows(rng, 20_000, missing=missing))
    return rng, profile, WindowSummary.of(profile, _rows(rng, 20_000, missing=missing))


def test_mmd_drift_false_alarm_rate_on_stationary_windows() -> None:
    # A fresh reference per window: alpha is the rate over reference draws (one fixed reference shares its
    # sampling noise across all windows, see detectors/README.md).
    rng, profile, _ = _world(0, missing=0.05)
    p = []
    for seed in range(150):
        detector = MMDDrift(WindowSummary.of(profile, _rows(rng, 2000, missing=0.05)), seed=seed)
        [finding] = detector.update(WindowSummary.of(profile, _rows(rng, 2000, missing=0.05)))
        assert finding.metric == "mmd" and finding.detail["n_window"] == 512
        p.append(finding.p_value)
    p = np.array(p)
    for alpha in (0.01, 0.05, 0.2):
        assert abs(np.mean(p <= alpha) - alpha) <= 3 * np.sqrt(alpha * (1 - alpha) / p.size)


def test_mmd_drift_flags_a_shift_and_round_trips_its_state() -> None:
    rng, profile, reference = _world(20)
    detector = MMDDrift(reference)
    window = _rows(rng, 2000)
    window["e"] = window["e"] + 0.5
    [finding] = detector.update(WindowSummary.of(profile, window))
    assert finding.breached and finding.p_value < 0.01 and detector.drift_detected
    restored = MMDDrift.from_state(json.loads(json.dumps(detector.state_dict())))
    assert restored.update(WindowSummary.of(profile, window)) == [finding]
    assert detector.update(WindowSummary.of(profile, _rows(rng, 40))) == []


def _pca_windows(
    seed: int, windows: int, rho_ab: float
) -> tuple[PCAReconstructionDrift, UnivariateDrift, list[WindowSummary]]:
    rng, profile, reference = _world(seed)
    summaries = [WindowSummary.of(profile, _rows(rng, 5000, rho_ab=rho_ab)) for _ in range(windows)]
    return PCAReconstructionDrift(reference), UnivariateDrift(reference), summaries


def test_pca_catches_a_correlation_flip_that_univariate_tests_miss() -> None:
    pca, univariate, windows = _pca_windows(30, 20, rho_ab=-0.9)
    pca_hits = sum(pca.update(w)[0].breached for w in windows)
    univariate_hits = sum(any(f.breached for f in univariate.update(w)) for w in windows)
    assert pca_hits == len(windows)
    assert univariate_hits <= 1
    mmd = MMDDrift(pca.reference)
    assert sum(mmd.update(w)[0].breached for w in windows[:5]) == 5


def _isotropic(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Twelve independent features: PCA drops the direction of least *sample* variance, so errors measured
    in-sample on the reference would be far below any new window's and every window would alarm."""
    return {f"x{i:02d}": column for i, column in enumerate(rng.normal(size=(n, 12)).T)}


def _stationary_p_values(data: str, seed: int, windows: int) -> np.ndarray:
    """p-values of `windows` stationary windows against one reference drawn from `seed`."""
    if data == "correlated":
        pca, _, summaries = _pca_windows(seed, windows, rho_ab=0.9)
    else:
        rng = np.random.default_rng(seed)
        profile = ReferenceProfile.fit(_isotropic(rng, 5000))
        pca = PCAReconstructionDrift(WindowSummary.of(profile, _isotropic(rng, 5000)))
        summaries = [WindowSummary.of(profile, _isotropic(rng, 2000)) for _ in range(windows)]
    return np.array([pca.update(w)[0].p_value for w in summaries])


@pytest.mark.parametrize("data", ["correlated", "isotropic"])
def test_pca_reconstruction_drift_is_quiet_on_stationary_windows(data: str) -> None:
    p = np.concatenate([_stationary_p_values(data, 40 + seed, 30) for seed in range(10)])
    for alpha in (0.01, 0.05):
        assert np.mean(p <= alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / p.size)


REFERENCE_SEEDS, WINDOWS_PER_REFERENCE = range(40, 80), 30


@pytest.mark.parametrize("data", ["correlated", "isotropic"])
def test_pca_reconstruction_drift_false_alarms_are_rare_for_every_reference(data: str) -> None:
    # One reference's estimate is shared by all its windows, so a pooled rate near alpha can hide a reference
    # that alarms on every third window (the two-sample z-test did: 9 of 30 at alpha 0.01, seed 44).
    # Given the reference the windows are independent, so a reference whose per-window rate is <= alpha
    # alarms on K ~ Binomial(30, <= alpha) windows. `limit` = the smallest k with P(K > k) <= 0.005 / 40:
    # by the union bound over the 40 references a detector that holds every reference to alpha fails a
    # level with probability <= 0.5% (limits: 4 of 30 at alpha 0.01, 7 of 30 at 0.05).
    p = np.array([_stationary_p_values(data, seed, WINDOWS_PER_REFERENCE) for seed in REFERENCE_SEEDS])
    for alpha in (0.01, 0.05):
        limit = stats.binom.isf(0.005 / len(REFERENCE_SEEDS), WINDOWS_PER_REFERENCE, alpha)
        alarms = (p <= alpha).sum(axis=1)
        assert alarms.max() <= limit, (alpha, dict(zip(REFERENCE_SEEDS, alarms.tolist(), strict=True)))
        assert alarms.sum() / p.size <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / p.size)


def test_reference_bound_holds_at_its_confidence_for_skewed_errors() -> None:
    # Squared residuals along one direction of normal data are chi-squared(1), skewness 2.8: the most skewed a
    # reconstruction error of normal features gets. The plain normal bound mean + z se fails on 1.9% of
    # 512-row references at confidence 0.99; the Cornish-Fisher term brings that to 1.2% (measured).
    draws = 6000
    errors = np.random.default_rng(70).chisquare(1, size=(draws, 512))
    bounds = np.array([PCAReconstructionDrift._upper_bound(e, REFERENCE_CONFIDENCE) for e in errors])
    level = 1 - REFERENCE_CONFIDENCE
    assert np.mean(bounds < 1.0) <= level + 3 * np.sqrt(level * (1 - level) / draws)


def test_pca_reconstruction_drift_detects_a_weakened_correlation_with_every_reference() -> None:
    # Corr(a, b) 0.9 -> 0.7, marginals unchanged: the residual variance along a - b triples. The bound on the
    # reference's error must not cost this power: 99% of windows breach (measured), none below 80% per reference.
    hits = []
    for seed in REFERENCE_SEEDS:
        pca, _, windows = _pca_windows(seed, 5, rho_ab=0.7)
        hits.append(np.mean([pca.update(w)[0].breached for w in windows]))
    assert np.mean(hits) >= 0.95 and min(hits) >= 0.6, hits


def test_pca_fit_matches_sklearn() -> None:
    rng, profile, reference = _world(50, missing=0.02)
    detector = PCAReconstructionDrift(reference)
    values = reference.reservoir.values
    mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    x = (np.where(np.isnan(values), mean, values) - mean) / std
    sk = PCA(n_components=0.9, svd_solver="full").fit(x)
    assert detector.n_components == sk.n_components_ == 4
    window = WindowSummary.of(profile, _rows(rng, 3000, missing=0.02))
    w = window.reservoir.values
    wx = (np.where(np.isnan(w), mean, w) - mean) / std
    expected = np.mean(np.sum((wx - sk.inverse_transform(sk.transform(wx))) ** 2, axis=1))
    [finding] = detector.update(window)
    assert finding.metric == "pca_reconstruction_error"
    assert finding.value == pytest.approx(expected, rel=1e-9)
    assert (finding.value > finding.threshold) == finding.breached
    restored = PCAReconstructionDrift.from_state(json.loads(json.dumps(detector.state_dict())))
    assert restored.update(window) == [finding]


def test_reservoir_detectors_check_their_input() -> None:
    _, profile, reference = _world(60)
    rng = np.random.default_rng(61)
    single = ReferenceProfile.fit({"a": rng.normal(size=1000)})
    with pytest.raises(ValueError, match="at least 2"):
        PCAReconstructionDrift(WindowSummary.of(single, {"a": rng.normal(size=1000)}))
    narrow = ReferenceProfile.fit({"a": rng.normal(size=1000), "b": rng.normal(size=1000)})
    with pytest.raises(ValueError, match="columns differ"):
        MMDDrift(reference).update(WindowSummary.of(narrow, {"a": rng.normal(size=1000), "b": rng.normal(size=1000)}))
    with pytest.raises(ValueError, match="reservoir has"):
        MMDDrift(WindowSummary.of(profile, _rows(rng, 10)))
