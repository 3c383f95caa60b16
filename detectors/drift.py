"""Univariate drift between a reference histogram and a window histogram on the same bins.

The statistics are pure functions of bin counts, because a window summary keeps histograms, not rows.
Where a binned value only approximates the raw-sample statistic, the function returns a bound that is
guaranteed to contain the raw-sample value; the tests check those bounds against scipy on raw samples.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from driftline.detectors.findings import Finding
from driftline.detectors.summaries import NumericSummary, WindowSummary

FloatArray = NDArray[np.float64]


def _counts(counts: ArrayLike, name: str) -> FloatArray:
    a = np.asarray(counts, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of counts")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must hold finite, non-negative counts")
    if a.sum() <= 0:
        raise ValueError(f"{name} must have a positive total")
    return a


def _probabilities(ref_counts: ArrayLike, cur_counts: ArrayLike) -> tuple[FloatArray, FloatArray]:
    ref = _counts(ref_counts, "ref_counts")
    cur = _counts(cur_counts, "cur_counts")
    if ref.shape != cur.shape:
        raise ValueError(f"histograms differ in length: {ref.size} vs {cur.size}")
    return ref / ref.sum(), cur / cur.sum()


def psi(ref_counts: ArrayLike, cur_counts: ArrayLike, eps: float = 1e-4) -> float:
    """Population stability index sum((q - p) * ln(q / p)), probabilities floored at `eps`.

    The floor keeps an empty bin from making PSI infinite; it is the symmetric KL divergence
    (Jeffreys) of the floored histograms.

    >>> round(psi([50, 50], [40, 60]), 4)
    0.0405
    """
    p, q = _probabilities(ref_counts, cur_counts)
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(ref_counts: ArrayLike, cur_counts: ArrayLike) -> float:
    """Jensen-Shannon distance, base 2 (in [0, 1]); equal to scipy.spatial.distance.jensenshannon(base=2).

    >>> jensen_shannon([1, 0], [0, 1])
    1.0
    """
    p, q = _probabilities(ref_counts, cur_counts)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0)
    js = (kl_p.sum() + kl_q.sum()) / 2
    return float(np.sqrt(min(max(js, 0.0), 1.0)))


def hellinger(ref_counts: ArrayLike, cur_counts: ArrayLike) -> float:
    """Hellinger distance sqrt(1 - sum(sqrt(p * q))), in [0, 1].

    >>> hellinger([1, 0], [0, 1])
    1.0
    """
    p, q = _probabilities(ref_counts, cur_counts)
    return float(np.sqrt(max(1.0 - np.sum(np.sqrt(p * q)), 0.0)))


class KSResult(NamedTuple):
    """Binned two-sample KS: statistic <= raw-sample statistic <= upper_bound."""

    statistic: float
    p_value: float
    upper_bound: float


def ks_p_value(statistic: float, n_ref: float, n_cur: float) -> float:
    """Two-sided asymptotic KS p-value with effective n = n_ref * n_cur / (n_ref + n_cur).

    Same formula as scipy.stats.ks_2samp(method="asymp"): kstwo.sf(D, round(n_eff)).

    >>> round(ks_p_value(0.05, 10_000, 1_000), 4)
    0.0205
    """
    n_eff = float(n_ref) * float(n_cur) / (float(n_ref) + float(n_cur))
    return float(np.clip(stats.kstwo.sf(statistic, max(round(n_eff), 1)), 0.0, 1.0))


def ks_from_bins(ref_counts: ArrayLike, cur_counts: ArrayLike) -> KSResult:
    """Two-sample KS statistic max |F_ref - F_cur| over bin edges, with its p-value and error bound.

    The CDFs are exact at the edges, so the binned statistic D_bin never exceeds the raw-sample one D
    (its p-value is conservative). Inside bin i, with masses p_i and q_i and edge differences d_a, d_b,
    both CDFs are monotone, so F_ref - F_cur <= min(d_b + q_i, d_a + p_i) and
    F_cur - F_ref <= min(p_i - d_b, q_i - d_a). The largest of these is `upper_bound`, hence
    D_bin <= D <= upper_bound <= D_bin + max_i max(p_i, q_i).

    >>> r = ks_from_bins([10, 20, 30, 40], [40, 30, 20, 10])
    >>> round(r.statistic, 2), r.upper_bound <= r.statistic + 0.4
    (0.4, True)
    """
    ref = _counts(ref_counts, "ref_counts")
    cur = _counts(cur_counts, "cur_counts")
    p, q = _probabilities(ref, cur)
    d = np.concatenate(([0.0], np.cumsum(p) - np.cumsum(q)))
    d[-1] = 0.0
    statistic = float(np.max(np.abs(d)))
    d_a, d_b = d[:-1], d[1:]
    inside = np.maximum(np.minimum(d_b + q, d_a + p), np.minimum(p - d_b, q - d_a))
    upper = float(min(max(statistic, float(np.max(inside))), 1.0))
    return KSResult(statistic, ks_p_value(statistic, ref.sum(), cur.sum()), upper)


class WassersteinResult(NamedTuple):
    """Binned W1 estimate and a bound on |estimate - raw-sample W1|."""

    distance: float
    max_error: float


def wasserstein_from_bins(edges: ArrayLike, ref_counts: ArrayLike, cur_counts: ArrayLike) -> WassersteinResult:
    """W1 = integral |F_ref - F_cur| dx, with each bin's mass spread uniformly over the bin.

    `edges` has len(counts) + 1 finite, non-decreasing boundaries that enclose all values (for a
    summary's open-ended under/overflow bins, close them with the observed min and max). The CDFs are
    exact at the edges; inside bin i of width w_i the true and interpolated CDFs of each sample differ by at
    most p_i * t and p_i * (1 - t) either way, so |W1_bins - W1| <= sum_i w_i * ((p_i + q_i) / 2 +
    |p_i - q_i| / 4) = `max_error`, which is at most 1.5 * max_i w_i.

    >>> r = wasserstein_from_bins([0.0, 1.0, 2.0], [1, 0], [0, 1])
    >>> r.distance, r.max_error
    (1.0, 1.5)
    """
    e = np.asarray(edges, dtype=np.float64)
    p, q = _probabilities(ref_counts, cur_counts)
    if e.ndim != 1 or e.size != p.size + 1:
        raise ValueError("edges must have len(counts) + 1 entries")
    widths = np.diff(e)
    if not np.all(np.isfinite(e)) or np.any(widths < 0):
        raise ValueError("edges must be finite and non-decreasing")
    d = np.concatenate(([0.0], np.cumsum(p) - np.cumsum(q)))
    d[-1] = 0.0
    a, b = d[:-1], d[1:]
    same_sign = a * b >= 0
    total = np.abs(a) + np.abs(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(total > 0, (a * a + b * b) / (2 * total), 0.0)
    per_bin = np.where(same_sign, total / 2, crossing)
    distance = float(np.sum(widths * per_bin))
    bound = float(np.sum(widths * ((p + q) / 2 + np.abs(p - q) / 4)))
    return WassersteinResult(distance, bound)


class Chi2Result(NamedTuple):
    statistic: float
    p_value: float
    dof: int


def chi2_categorical(ref_counts: ArrayLike, cur_counts: ArrayLike) -> Chi2Result:
    """Pearson chi-squared homogeneity test on the 2 x k table of counts, empty columns dropped.

    Equal to scipy.stats.chi2_contingency(table, correction=False); no Yates correction, so a 2 x 2
    table gives the plain Pearson statistic too.

    >>> r = chi2_categorical([50, 50, 0], [30, 70, 0])
    >>> round(r.statistic, 3), r.dof
    (8.333, 1)
    """
    ref = _counts(ref_counts, "ref_counts")
    cur = _counts(cur_counts, "cur_counts")
    if ref.shape != cur.shape:
        raise ValueError(f"count vectors differ in length: {ref.size} vs {cur.size}")
    table = np.vstack((ref, cur))
    table = table[:, table.sum(axis=0) > 0]
    dof = table.shape[1] - 1
    if dof == 0:
        return Chi2Result(0.0, 1.0, 0)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return Chi2Result(statistic, float(stats.chi2.sf(statistic, dof)), dof)


def benjamini_hochberg(p_values: ArrayLike) -> FloatArray:
    """Benjamini-Hochberg adjusted p-values (q-values); reject at FDR level alpha where q <= alpha.

    Under the global null (no feature drifted) rejecting any q <= alpha happens with probability
    <= alpha for independent or positively dependent tests, so it bounds the per-window false-alarm rate.

    >>> benjamini_hochberg([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.04, 0.04]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty_like(p)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


@dataclass(frozen=True, slots=True)
class _Test:
    """One hypothesis test of a window plus the effect sizes that gate its verdict."""

    metric: str
    feature: str
    statistic: float
    p_value: float
    psi: float
    js: float
    detail: Mapping[str, Any]
    reports: tuple[Finding, ...] = field(default=())


def _closed_edges(ref: NumericSummary, cur: NumericSummary) -> FloatArray:
    """The summary's edges closed on both ends by the observed min and max of either sample."""
    edges = np.asarray(ref.edges, dtype=np.float64)
    lows = [v for v in (ref.min, cur.min, edges[0]) if np.isfinite(v)]
    highs = [v for v in (ref.max, cur.max, edges[-1]) if np.isfinite(v)]
    return np.concatenate(([min(lows)], edges, [max(highs)]))


class UnivariateDrift:
    """Per-feature and prediction-output drift of one window against the reference window.

    Why two gates: a p-value alone alarms on every large window (any shift becomes significant at large n),
    an effect size alone alarms on every small window (noise looks like an effect). A test is breached
    only when its Benjamini-Hochberg adjusted p-value, over all tests of the window, is <= `alpha`
    AND its PSI >= `psi_floor` or Jensen-Shannon distance >= `js_floor`. Under no drift the chance that a
    window raises any breach is <= alpha. Features with fewer than `min_samples` non-missing window
    values are not tested. Missing values are excluded; their rate is a data-quality signal.

    Verdicts are on the `ks` (numeric), `chi2` (categorical) and `prediction_drift` (score histogram,
    predicted labels, regression prediction) findings; `psi`, `jensen_shannon`, `hellinger` and
    `wasserstein` are reported with `threshold=None` and never breach on their own.

    >>> import numpy as np
    >>> from driftline.detectors.summaries import ReferenceProfile, WindowSummary
    >>> rng = np.random.default_rng(0)
    >>> profile = ReferenceProfile.fit({"x": rng.normal(size=5000)})
    >>> ref = WindowSummary.of(profile, {"x": rng.normal(size=5000)})
    >>> detector = UnivariateDrift(ref)
    >>> [f.breached for f in detector.update(WindowSummary.of(profile, {"x": rng.normal(size=5000)}))
    ...  if f.metric == "ks"]
    [False]
    >>> [f.breached for f in detector.update(WindowSummary.of(profile, {"x": rng.normal(0.5, size=5000)}))
    ...  if f.metric == "ks"]
    [True]
    """

    def __init__(
        self,
        reference: WindowSummary,
        alpha: float = 0.01,
        psi_floor: float = 0.1,
        js_floor: float = 0.05,
        min_samples: int = 200,
        eps: float = 1e-4,
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        self.reference = reference
        self.alpha = alpha
        self.psi_floor = psi_floor
        self.js_floor = js_floor
        self.min_samples = min_samples
        self.eps = eps
        self.drift_detected = False

    def update(self, summary: WindowSummary) -> list[Finding]:
        tests = [*self._numeric_tests(summary), *self._categorical_tests(summary), *self._output_tests(summary)]
        q_values = benjamini_hochberg([t.p_value for t in tests])
        findings: list[Finding] = []
        for t, q in zip(tests, q_values, strict=True):
            significant = bool(q <= self.alpha)
            large = t.psi >= self.psi_floor or t.js >= self.js_floor
            detail = {
                **t.detail,
                "q_value": float(q),
                "psi": t.psi,
                "jensen_shannon": t.js,
                "psi_floor": self.psi_floor,
                "js_floor": self.js_floor,
                "significant": significant,
                "large_effect": large,
                "tests_in_window": len(tests),
            }
            findings.append(
                Finding(t.metric, t.statistic, self.alpha, significant and large, t.feature, "", t.p_value, detail)
            )
            findings.extend(t.reports)
        self.drift_detected = any(f.breached for f in findings)
        return findings

    def _histogram_test(self, metric: str, feature: str, ref: ArrayLike, cur: ArrayLike) -> _Test:
        ks = ks_from_bins(ref, cur)
        return _Test(
            metric,
            feature,
            ks.statistic,
            ks.p_value,
            psi(ref, cur, self.eps),
            jensen_shannon(ref, cur),
            {
                "test": "ks",
                "upper_bound": ks.upper_bound,
                "n_reference": int(np.sum(ref)),
                "n_window": int(np.sum(cur)),
            },
        )

    def _categorical_test(self, metric: str, feature: str, ref: ArrayLike, cur: ArrayLike) -> _Test:
        chi2 = chi2_categorical(ref, cur)
        return _Test(
            metric,
            feature,
            chi2.statistic,
            chi2.p_value,
            psi(ref, cur, self.eps),
            jensen_shannon(ref, cur),
            {"test": "chi2", "dof": chi2.dof, "n_reference": int(np.sum(ref)), "n_window": int(np.sum(cur))},
        )

    def _enough(self, ref: ArrayLike, cur: ArrayLike) -> bool:
        return float(np.sum(cur)) >= self.min_samples and float(np.sum(ref)) > 0

    def _numeric_tests(self, summary: WindowSummary) -> list[_Test]:
        tests = []
        for name, ref in self.reference.numeric.items():
            cur = summary.numeric.get(name)
            if cur is None or not self._enough(ref.bins, cur.bins):
                continue
            if not np.array_equal(ref.edges, cur.edges):
                raise ValueError(f"feature {name!r}: window and reference are binned on different edges")
            t = self._histogram_test("ks", name, ref.bins, cur.bins)
            w1 = wasserstein_from_bins(_closed_edges(ref, cur), ref.bins, cur.bins)
            ref_std = float(np.sqrt(ref.m2 / ref.count)) if ref.count > 0 else 0.0
            reports = (
                Finding("psi", t.psi, None, False, name),
                Finding("jensen_shannon", t.js, None, False, name),
                Finding("hellinger", hellinger(ref.bins, cur.bins), None, False, name),
                Finding(
                    "wasserstein",
                    w1.distance,
                    None,
                    False,
                    name,
                    detail={
                        "max_error": w1.max_error,
                        "reference_std": ref_std,
                        "normalized": w1.distance / ref_std if ref_std > 0 else float("nan"),
                    },
                ),
            )
            tests.append(_Test(t.metric, name, t.statistic, t.p_value, t.psi, t.js, t.detail, reports))
        return tests

    def _categorical_tests(self, summary: WindowSummary) -> list[_Test]:
        tests = []
        for name, ref in self.reference.categorical.items():
            cur = summary.categorical.get(name)
            if cur is None:
                continue
            if tuple(ref.categories) != tuple(cur.categories):
                raise ValueError(f"feature {name!r}: window and reference have different categories")
            ref_counts = np.append(ref.counts, ref.other)
            cur_counts = np.append(cur.counts, cur.other)
            if not self._enough(ref_counts, cur_counts):
                continue
            t = self._categorical_test("chi2", name, ref_counts, cur_counts)
            reports = (
                Finding("psi", t.psi, None, False, name),
                Finding("jensen_shannon", t.js, None, False, name),
                Finding("hellinger", hellinger(ref_counts, cur_counts), None, False, name),
            )
            tests.append(_Test(t.metric, name, t.statistic, t.p_value, t.psi, t.js, t.detail, reports))
        return tests

    def _output_tests(self, summary: WindowSummary) -> list[_Test]:
        tests = []
        ref_c, cur_c = self.reference.classifier, summary.classifier
        if ref_c is not None and cur_c is not None:
            if self._enough(ref_c.score_hist, cur_c.score_hist):
                tests.append(self._histogram_test("prediction_drift", "score", ref_c.score_hist, cur_c.score_hist))
            if self._enough(ref_c.pred_counts, cur_c.pred_counts):
                tests.append(
                    self._categorical_test("prediction_drift", "predicted_label", ref_c.pred_counts, cur_c.pred_counts)
                )
        ref_r, cur_r = self.reference.regression, summary.regression
        if ref_r is not None and cur_r is not None and self._enough(ref_r.prediction.bins, cur_r.prediction.bins):
            if not np.array_equal(ref_r.prediction.edges, cur_r.prediction.edges):
                raise ValueError("regression prediction: window and reference are binned on different edges")
            tests.append(
                self._histogram_test("prediction_drift", "prediction", ref_r.prediction.bins, cur_r.prediction.bins)
            )
        return tests

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state: the reference summary (base64) and the configuration."""
        return {
            "reference": base64.b64encode(self.reference.to_bytes()).decode("ascii"),
            "alpha": self.alpha,
            "psi_floor": self.psi_floor,
            "js_floor": self.js_floor,
            "min_samples": self.min_samples,
            "eps": self.eps,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        reference = WindowSummary.from_bytes(base64.b64decode(state["reference"]))
        config = {k: state[k] for k in ("alpha", "psi_floor", "js_floor", "min_samples", "eps")}
        return cls(reference, **config)
