"""MMD against a plain numpy implementation, its p-value calibration, and the multivariate detectors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from detectors.multivariate import mmd_test


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
