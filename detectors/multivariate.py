"""Multivariate drift on the window's reservoir sample: kernel MMD and PCA reconstruction error.

Univariate tests compare marginals one feature at a time; a change in how features move together (a
correlation that flips sign, a new cluster) leaves every marginal intact. Both detectors here compare the
window's reservoir (a uniform sample of its numeric feature vectors) with the reference's reservoir.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from driftline.detectors.findings import Finding
from driftline.detectors.summaries import WindowSummary

if TYPE_CHECKING:
    import torch

FloatArray = NDArray[np.float64]

# PCAReconstructionDrift: the share of references whose bound on the expected reconstruction error holds,
# and so whose windows alarm at most at alpha. A constant, not a knob: streams' configuration mirrors the
# constructor's arguments.
REFERENCE_CONFIDENCE = 0.99


def _device(device: str | torch.device | None) -> torch.device:
    import torch  # here, not at the top: torch takes ~2 s to import and only the MMD test needs it

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _matrix(a: ArrayLike, name: str) -> FloatArray:
    m = np.asarray(a, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2 or m.shape[0] < 2:
        raise ValueError(f"{name} must be a 2-D array with at least 2 rows")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} must be finite (impute missing values first)")
    return m


def mmd_test(
    x: ArrayLike,
    y: ArrayLike,
    n_permutations: int = 200,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> tuple[float, float]:
    """Unbiased MMD^2 between samples x and y with an RBF kernel, and its permutation p-value.

    Kernel exp(-|a - b|^2 / (2 h^2)) with h the median pairwise distance of the pooled sample (median
    heuristic; h = 1 if that is 0). The pooled kernel matrix is built once; each permutation is a 0/1
    membership row, so all statistics come from one batched matrix product. p = (1 + #{permuted >=
    observed}) / (1 + n_permutations), which is a valid p-value (P(p <= alpha) <= alpha under H0).

    Runs in float64 on CUDA when available (or on `device`), else on CPU. Permutations are drawn on the
    CPU from `seed`, so both devices test the same permutations: MMD^2 agrees to rounding (~1e-12) and the
    p-value is identical unless a permuted statistic lies within 1e-9 (relative) of the observed one.

    >>> rng = np.random.default_rng(0)
    >>> mmd2, p = mmd_test(rng.normal(size=(100, 3)), rng.normal(1.0, size=(100, 3)))
    >>> mmd2 > 0, p < 0.01
    (True, True)
    """
    xm, ym = _matrix(x, "x"), _matrix(y, "y")
    if xm.shape[1] != ym.shape[1]:
        raise ValueError("x and y must have the same number of columns")
    if n_permutations < 1:
        raise ValueError("n_permutations must be >= 1")
    import torch

    dev = _device(device)
    m, n = xm.shape[0], ym.shape[0]
    total = m + n
    z = torch.from_numpy(np.vstack((xm, ym))).to(dev)
    sq = (z * z).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min_(0.0)
    d2.fill_diagonal_(0.0)
    iu = torch.triu_indices(total, total, offset=1, device=dev)
    h = float(torch.quantile(d2[iu[0], iu[1]].sqrt(), 0.5))
    if h <= 0.0:
        h = 1.0
    k = torch.exp(-d2 / (2.0 * h * h))
    k.fill_diagonal_(0.0)

    gen = torch.Generator(device="cpu").manual_seed(seed)
    order = torch.argsort(torch.rand(n_permutations, total, generator=gen, dtype=torch.float64), dim=1)
    member = torch.zeros(n_permutations + 1, total, dtype=torch.float64)
    member[0, :m] = 1.0
    member[1:].scatter_(1, order[:, :m], 1.0)
    member = member.to(dev)

    k_member = member @ k
    xx = (k_member * member).sum(dim=1)
    xy = (k_member * (1.0 - member)).sum(dim=1)
    yy = k.sum() - 2.0 * xy - xx
    mmd2 = xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2.0 * xy / (m * n)
    observed = mmd2[0]
    tolerance = 1e-9 * max(1.0, abs(float(observed)))
    exceed = int((mmd2[1:] >= observed - tolerance).sum())
    return float(observed), (1 + exceed) / (1 + n_permutations)


class _Standardizer:
    """Impute missing values with the reference column means, then scale by the reference."""

    def __init__(self, reference: FloatArray) -> None:
        with np.errstate(all="ignore"):
            mean = np.nanmean(reference, axis=0)
            std = np.nanstd(reference, axis=0)
        self.mean = np.where(np.isfinite(mean), mean, 0.0)
        self.std = np.where(np.isfinite(std) & (std > 0), std, 1.0)

    def __call__(self, values: FloatArray) -> FloatArray:
        filled = np.where(np.isnan(values), self.mean, values)
        return (filled - self.mean) / self.std


def _reservoir(summary: WindowSummary) -> tuple[tuple[str, ...], FloatArray]:
    r = summary.reservoir
    values = np.asarray(r.values, dtype=np.float64).reshape(-1, len(r.feature_names))
    return tuple(r.feature_names), values


def _encode(summary: WindowSummary) -> str:
    return base64.b64encode(summary.to_bytes()).decode("ascii")


def _decode(text: str) -> WindowSummary:
    return WindowSummary.from_bytes(base64.b64decode(text))


class _ReservoirDetector:
    """Shared plumbing: the reference reservoir, its standardiser, and feature-order checks."""

    def __init__(self, reference: WindowSummary, alpha: float, min_samples: int) -> None:
        if not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        self.reference = reference
        self.alpha = alpha
        self.min_samples = min_samples
        self.feature_names, ref_values = _reservoir(reference)
        if ref_values.shape[0] < max(min_samples, 2):
            raise ValueError(f"reference reservoir has {ref_values.shape[0]} rows, needs >= {max(min_samples, 2)}")
        self.standardize = _Standardizer(ref_values)
        self.ref = self.standardize(ref_values)
        self.drift_detected = False

    def _window(self, summary: WindowSummary) -> FloatArray | None:
        names, values = _reservoir(summary)
        if names != self.feature_names:
            raise ValueError("window reservoir columns differ from the reference's")
        if values.shape[0] < self.min_samples:
            return None
        return self.standardize(values)


class MMDDrift(_ReservoirDetector):
    """Kernel two-sample test (unbiased MMD^2, permutation p-value) of window vs reference reservoir.

    Breach when p <= `alpha`; under no drift that happens with probability <= alpha per window, averaged
    over reference draws, because the permutation p-value is exact. One fixed reference shares its own
    sampling noise with every window, so its windows' verdicts are correlated; a reference summary with a
    larger reservoir (`WindowSummary.empty(profile, reservoir_size=...)`) shrinks that, at O((m + n)^2)
    cost. Windows whose reservoir has fewer than `min_samples` rows are not tested. The permutation seed is
    fixed, so replaying a window reproduces its verdict.

    >>> import numpy as np
    >>> from driftline.detectors.summaries import ReferenceProfile, WindowSummary
    >>> rng = np.random.default_rng(0)
    >>> cov = [[1.0, 0.9], [0.9, 1.0]]
    >>> def data(c):
    ...     x = rng.multivariate_normal([0, 0], c, size=5000)
    ...     return {"a": x[:, 0], "b": x[:, 1]}
    >>> profile = ReferenceProfile.fit(data(cov))
    >>> detector = MMDDrift(WindowSummary.of(profile, data(cov)))
    >>> detector.update(WindowSummary.of(profile, data(cov)))[0].breached
    False
    >>> detector.update(WindowSummary.of(profile, data([[1.0, -0.9], [-0.9, 1.0]])))[0].breached
    True
    """

    def __init__(
        self,
        reference: WindowSummary,
        alpha: float = 0.01,
        n_permutations: int = 200,
        min_samples: int = 50,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        super().__init__(reference, alpha, min_samples)
        self.n_permutations = n_permutations
        self.seed = seed
        self.device = device

    def update(self, summary: WindowSummary) -> list[Finding]:
        window = self._window(summary)
        if window is None:
            self.drift_detected = False
            return []
        mmd2, p = mmd_test(self.ref, window, self.n_permutations, self.seed, self.device)
        self.drift_detected = p <= self.alpha
        detail = {"n_reference": self.ref.shape[0], "n_window": window.shape[0], "n_permutations": self.n_permutations}
        return [Finding("mmd", mmd2, self.alpha, self.drift_detected, p_value=p, detail=detail)]

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state: the reference summary (base64) and the configuration."""
        return {
            "reference": _encode(self.reference),
            "alpha": self.alpha,
            "n_permutations": self.n_permutations,
            "min_samples": self.min_samples,
            "seed": self.seed,
            "device": self.device,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        config = {k: state[k] for k in ("alpha", "n_permutations", "min_samples", "seed", "device")}
        return cls(_decode(state["reference"]), **config)


class PCAReconstructionDrift(_ReservoirDetector):
    """Mean PCA reconstruction error of the window vs an upper bound on the reference's expected error.

    PCA (on reference-standardised features) keeps the fewest components explaining `variance` of the
    reference variance, at most d - 1, so a residual subspace always remains: rows that break the
    reference's correlation structure land there. The reference errors are out-of-fold (`n_folds`-fold),
    because in-sample errors are biased low and would make every window look drifted.

    Test: every window is compared with the reference's one estimate m of the expected error (standard
    error s_ref, the same order as a window's), so a reference whose m came out low alarms on a large share
    of its windows while the rate pooled over references is alpha (measured: one reference of 40 alarmed
    on 30% of its windows, pooled 1.4%). So m is replaced by an upper confidence bound B = m + s_ref (z +
    c (2 z^2 + 1)), z = Phi^-1(`REFERENCE_CONFIDENCE`); c (2 z^2 + 1), c = max(skewness, 0) / (6 sqrt(n_ref)),
    is the Cornish-Fisher term of the studentised mean: squared errors are right-skewed, so a low m comes
    with a low s_ref and the normal bound alone holds less often than it claims. Then one-sided z-test of
    the window's mean error against B with the window's standard error s_w: p = 1 - Phi((mean_w - B) / s_w),
    breach when p <= `alpha`, threshold B + Phi^-1(1 - alpha) s_w. For the references whose bound holds
    (all but ~1%) every window breaches with probability <= alpha, whatever alpha; the window's own s_w
    needs no skewness term (its high means come with high s_w, which makes the normal quantile
    conservative). The price is power: a reference reservoir larger than the windows' shrinks s_ref and
    with it the margin (see detectors/README.md).

    >>> import numpy as np
    >>> from driftline.detectors.summaries import ReferenceProfile, WindowSummary
    >>> rng = np.random.default_rng(0)
    >>> cov = [[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]]
    >>> flipped = [[1.0, -0.9, 0.0], [-0.9, 1.0, 0.0], [0.0, 0.0, 1.0]]
    >>> def data(c):
    ...     x = rng.multivariate_normal([0, 0, 0], c, size=5000)
    ...     return {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}
    >>> profile = ReferenceProfile.fit(data(cov))
    >>> detector = PCAReconstructionDrift(WindowSummary.of(profile, data(cov)))
    >>> detector.update(WindowSummary.of(profile, data(cov)))[0].breached
    False
    >>> detector.update(WindowSummary.of(profile, data(flipped)))[0].breached
    True
    """

    def __init__(
        self,
        reference: WindowSummary,
        alpha: float = 0.01,
        variance: float = 0.9,
        min_samples: int = 50,
        n_folds: int = 5,
    ) -> None:
        super().__init__(reference, alpha, min_samples)
        if self.ref.shape[1] < 2:
            raise ValueError("PCA reconstruction needs at least 2 numeric features")
        if not 0 < variance <= 1:
            raise ValueError("variance must be in (0, 1]")
        self.variance = variance
        self.n_folds = n_folds
        self.mean, components, explained = self._fit(self.ref, None)
        share = np.cumsum(explained) / explained.sum()
        self.n_components = min(int(np.searchsorted(share, variance - 1e-12)) + 1, self.ref.shape[1] - 1)
        self.components = components[: self.n_components]
        self.ref_errors = self._out_of_fold_errors()
        self.reference_bound = self._upper_bound(self.ref_errors, REFERENCE_CONFIDENCE)

    @staticmethod
    def _fit(x: FloatArray, n_components: int | None) -> tuple[FloatArray, FloatArray, FloatArray]:
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        return mean, vt[:n_components], s**2

    @staticmethod
    def _errors(x: FloatArray, mean: FloatArray, components: FloatArray) -> FloatArray:
        centred = x - mean
        residual = centred - (centred @ components.T) @ components
        return np.einsum("ij,ij->i", residual, residual)

    @staticmethod
    def _upper_bound(errors: FloatArray, confidence: float) -> float:
        """Cornish-Fisher upper confidence bound on the mean of `errors` (see the class docstring)."""
        n = errors.size
        mean = float(errors.mean())
        centred = errors - mean
        m2, m3 = float(np.mean(centred**2)), float(np.mean(centred**3))
        # Only a right skew makes the normal bound too low; a left-skewed mean has a light lower tail.
        skewness = max(m3 / m2**1.5, 0.0) if m2 > 0 else 0.0
        z = float(stats.norm.isf(1.0 - confidence))
        return mean + np.sqrt(m2 / (n - 1)) * (z + skewness / (6.0 * np.sqrt(n)) * (2.0 * z * z + 1.0))

    def _out_of_fold_errors(self) -> FloatArray:
        folds = np.arange(self.ref.shape[0]) % self.n_folds
        errors = np.empty(self.ref.shape[0])
        for f in range(self.n_folds):
            held = folds == f
            mean, components, _ = self._fit(self.ref[~held], self.n_components)
            errors[held] = self._errors(self.ref[held], mean, components)
        return errors

    def update(self, summary: WindowSummary) -> list[Finding]:
        window = self._window(summary)
        if window is None:
            self.drift_detected = False
            return []
        errors = self._errors(window, self.mean, self.components)
        value = float(errors.mean())
        window_se = float(np.sqrt(errors.var(ddof=1) / errors.size))
        excess = value - self.reference_bound
        z = excess / window_se if window_se > 0 else np.inf if excess > 0 else -np.inf
        p = float(stats.norm.sf(z))
        threshold = self.reference_bound + float(stats.norm.isf(self.alpha)) * window_se
        self.drift_detected = p <= self.alpha
        detail = {
            "reference_mean": float(self.ref_errors.mean()),
            "reference_bound": self.reference_bound,
            "window_standard_error": window_se,
            "n_components": self.n_components,
            "n_reference": self.ref.shape[0],
            "n_window": window.shape[0],
        }
        return [Finding("pca_reconstruction_error", value, threshold, self.drift_detected, p_value=p, detail=detail)]

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state: the reference summary (base64) and the configuration; the fit is redone on load."""
        return {
            "reference": _encode(self.reference),
            "alpha": self.alpha,
            "variance": self.variance,
            "min_samples": self.min_samples,
            "n_folds": self.n_folds,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        config = {k: state[k] for k in ("alpha", "variance", "min_samples", "n_folds")}
        return cls(_decode(state["reference"]), **config)
