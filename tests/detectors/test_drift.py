"""Univariate drift statistics against scipy on raw samples, and the detector's false-alarm rate and power."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import euclidean, jensenshannon

from detectors.drift import (
    benjamini_hochberg,
    chi2_categorical,
    hellinger,
    jensen_shannon,
    ks_from_bins,
    ks_p_value,
    psi,
    wasserstein_from_bins,
)


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
