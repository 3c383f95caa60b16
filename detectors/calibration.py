"""Calibration of a classifier's scores from the window's calibration bins, and a test that it drifted.

A model can keep its accuracy and still become over-confident (scores pushed towards 0/1 with the same
argmax); downstream decisions that threshold or price on the score then break. Accuracy tests miss that,
so calibration is tested on its own.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from driftline.detectors.findings import Finding

FloatArray = NDArray[np.float64]


class ReliabilityRow(NamedTuple):
    """One non-empty bin of a reliability diagram."""

    lower: float
    upper: float
    count: int
    mean_p: float
    frac_pos: float


def _bins(cal_count: ArrayLike, cal_sum_p: ArrayLike, cal_sum_y: ArrayLike) -> tuple[FloatArray, ...]:
    count = np.asarray(cal_count, dtype=np.float64)
    sum_p = np.asarray(cal_sum_p, dtype=np.float64)
    sum_y = np.asarray(cal_sum_y, dtype=np.float64)
    if not count.shape == sum_p.shape == sum_y.shape or count.ndim != 1:
        raise ValueError("calibration bins must be three 1-D arrays of one length")
    return count, sum_p, sum_y


def reliability_table(cal_count: ArrayLike, cal_sum_p: ArrayLike, cal_sum_y: ArrayLike) -> list[ReliabilityRow]:
    """Rows (lower, upper, count, mean score, fraction positive) of the non-empty equal-width bins.

    Bin i covers [i/B, (i+1)/B); mean_p and frac_pos equal sklearn's ``calibration_curve(strategy='uniform')``
    prob_pred and prob_true.

    >>> reliability_table([0, 2], [0.0, 1.5], [0, 1])
    [ReliabilityRow(lower=0.5, upper=1.0, count=2, mean_p=0.75, frac_pos=0.5)]
    """
    count, sum_p, sum_y = _bins(cal_count, cal_sum_p, cal_sum_y)
    width = 1.0 / count.size
    return [
        ReliabilityRow(
            float(i * width),
            float((i + 1) * width),
            int(count[i]),
            float(sum_p[i] / count[i]),
            float(sum_y[i] / count[i]),
        )
        for i in np.flatnonzero(count > 0)
    ]


def ece(cal_count: ArrayLike, cal_sum_p: ArrayLike, cal_sum_y: ArrayLike) -> float:
    """Expected calibration error over equal-width bins: sum_b |sum_y_b - sum_p_b| / n.

    Identical to torchmetrics' ``binary_calibration_error(norm='l1')`` (multiclass: confidence = max
    probability, y = prediction correct) with the same number of bins.

    >>> ece([10, 10], [2.0, 8.0], [3, 8])
    0.05
    """
    count, sum_p, sum_y = _bins(cal_count, cal_sum_p, cal_sum_y)
    n = count.sum()
    return float(np.abs(sum_y - sum_p).sum() / n) if n > 0 else float("nan")


def max_calibration_error(cal_count: ArrayLike, cal_sum_p: ArrayLike, cal_sum_y: ArrayLike) -> float:
    """Largest |fraction positive - mean score| over the non-empty bins (torchmetrics ``norm='max'``).

    >>> max_calibration_error([10, 10], [2.0, 8.0], [3, 8])
    0.1
    """
    count, sum_p, sum_y = _bins(cal_count, cal_sum_p, cal_sum_y)
    full = count > 0
    return float(np.max(np.abs(sum_y[full] - sum_p[full]) / count[full])) if full.any() else float("nan")


def ece_equal_mass(scores: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Equal-mass (adaptive) ECE on raw scores: sort, split into ``n_bins`` groups of n // n_bins or one more.

    Equal-width bins leave the sparse score extremes nearly empty; equal mass gives each bin the same
    weight. Tied scores on a group border are split by their sort order.

    >>> round(ece_equal_mass([0.1, 0.2, 0.8, 0.9], [0, 1, 1, 1], n_bins=2), 6)
    0.25
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    gaps = [abs(y[g].sum() - s[g].sum()) for g in np.array_split(order, n_bins)]
    return float(sum(gaps) / s.size)


def _mass_groups(counts: FloatArray, n_bins: int) -> NDArray[np.int64]:
    """Assign each fine bin to one of ``n_bins`` groups by where its mid-mass falls in the cumulative count.

    Each group's count is within the largest fine-bin count of n / n_bins.
    """
    mid = np.cumsum(counts) - counts / 2
    return np.minimum((mid * n_bins / counts.sum()).astype(np.int64), n_bins - 1)


def ece_equal_mass_from_hist(hist_pos: ArrayLike, hist_neg: ArrayLike, n_bins: int = 15) -> float:
    """Equal-mass ECE from the fine score histograms of labelled positives and negatives (binary models).

    Fine bins are kept whole and grouped by `_mass_groups`; a group's mean score is taken at the fine bins'
    centres, so against the ECE of the raw scores over the same groups the error is at most
    1 / (2 * fine bins) (0.005 for 100 bins). Against `ece_equal_mass` on raw scores the groups themselves
    differ by at most one fine bin's mass at each border.

    >>> ece_equal_mass_from_hist([0, 1, 0, 3], [2, 1, 1, 0], n_bins=2)
    0.03125
    """
    pos = np.asarray(hist_pos, dtype=np.float64)
    neg = np.asarray(hist_neg, dtype=np.float64)
    counts = pos + neg
    n = counts.sum()
    if n == 0:
        return float("nan")
    groups = _mass_groups(counts, n_bins)
    centres = (np.arange(counts.size) + 0.5) / counts.size
    sum_y = np.bincount(groups, weights=pos, minlength=n_bins)
    sum_p = np.bincount(groups, weights=counts * centres, minlength=n_bins)
    return float(np.abs(sum_y - sum_p).sum() / n)


class HLResult(NamedTuple):
    """Calibration-drift chi-squared statistic, its degrees of freedom (bins tested) and p-value."""

    statistic: float
    df: int
    p_value: float


def calibration_hl(
    window: tuple[ArrayLike, ArrayLike, ArrayLike],
    reference: tuple[ArrayLike, ArrayLike, ArrayLike],
    min_expected: float = 5.0,
) -> HLResult:
    """Hosmer-Lemeshow-type test that the window is calibrated like the reference, bin by bin.

    Each argument is (cal_count, cal_sum_p, cal_sum_y). H0: in every bin b the window's calibration gap
    (frac positive - mean score) equals the reference's, so the window's expected positives are
    E_b = S_b + n_b g_b with g_b the reference gap; the reference's own miscalibration is thus not
    blamed on the window, and a shift of scores within a bin is accounted for by S_b. Statistic:
    sum_b (O_b - E_b)^2 / V_b, V_b = n_b e_b (1 - e_b) + n_b^2 f_b (1 - f_b) / m_b (e_b = E_b / n_b, f_b the
    reference's fraction positive, m_b its count): the binomial variance bounds the Poisson-binomial one, so
    the test is slightly conservative. Only bins with at least ``min_expected`` expected positives and
    negatives in both window and reference are tested; df = their number; chi-squared(df) under H0.

    >>> r = calibration_hl(([100, 100], [20.0, 80.0], [35, 95]), ([1e4, 1e4], [2e3, 8e3], [2e3, 8e3]))
    >>> r.df, round(r.statistic, 2), r.p_value < 0.001
    (2, 27.85, True)
    """
    n, s, o = _bins(*window)
    m, q, r = _bins(*reference)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(m > 0, r / m, 0.0)
        gap = np.where(m > 0, (r - q) / m, 0.0)
        e = np.clip(np.where(n > 0, s / n, 0.0) + gap, 0.0, 1.0)
        usable = (
            (n * np.minimum(e, 1 - e) >= min_expected)
            & (m * np.minimum(f, 1 - f) >= min_expected)
            & (n > 0)
            & (m > 0)
        )
        var = n * e * (1 - e) + n * n * f * (1 - f) / np.where(m > 0, m, 1.0)
        terms = np.where(usable, (o - s - n * gap) ** 2 / np.where(usable, var, 1.0), 0.0)
    df = int(usable.sum())
    stat = float(terms.sum())
    return HLResult(stat, df, float(stats.chi2.sf(stat, df)) if df > 0 else 1.0)


def _cal(clf: Any) -> tuple[FloatArray, FloatArray, FloatArray]:
    return _bins(clf.cal_count, clf.cal_sum_p, clf.cal_sum_y)


class CalibrationDrift:
    """Flags a window whose scores are calibrated differently from the reference's (see `calibration_hl`).

    False alarms: the chi-squared test runs at ``alpha`` once per window with at least ``min_labeled``
    labels; sparse bins are left out rather than given a poor chi-squared approximation. ECE (equal width,
    and equal mass for binary models from the fine score histograms) and the Brier score are reported
    beside the reference's values for diagnosis, not tested.

    >>> import numpy as np
    >>> from driftline.detectors.summaries import ReferenceProfile, WindowSummary
    >>> profile = ReferenceProfile.fit({"x": np.arange(10.0)}, classes=["no", "yes"])
    >>> def window(seed, sharpen):
    ...     rng = np.random.default_rng(seed)
    ...     p = rng.uniform(0.01, 0.99, size=3000)
    ...     shown = 1 / (1 + ((1 - p) / p) ** sharpen)  # logit * sharpen: same side of 0.5, more extreme
    ...     w = WindowSummary.empty(profile)
    ...     w.add_labels(labels=np.where(rng.random(3000) < p, "yes", "no").tolist(), scores=shown)
    ...     return w
    >>> det = CalibrationDrift(window(0, sharpen=1.0))
    >>> [(f.metric, f.breached) for f in det.update(window(1, sharpen=2.0))]
    [('calibration_hl', True), ('ece', False), ('ece_equal_mass', False), ('brier', False)]
    """

    def __init__(self, reference: Any, *, alpha: float = 0.01, min_labeled: int = 200, min_expected: float = 5.0):
        clf = reference.classifier
        if clf is None or np.sum(clf.cal_count) == 0:
            raise ValueError("needs a reference whose classifier predictions carry scores and ground-truth labels")
        self.reference = _cal(clf)
        self.reference_ece = ece(*self.reference)
        self.reference_ece_mass = self._ece_mass(clf)
        self.reference_brier = clf.brier_sum / clf.prob_labeled if clf.prob_labeled > 0 else math.nan
        self.alpha, self.min_labeled, self.min_expected = alpha, min_labeled, min_expected
        self.drift_detected = False

    @staticmethod
    def _ece_mass(clf: Any) -> float:
        if len(clf.classes) != 2 or np.sum(clf.hist_pos) + np.sum(clf.hist_neg) == 0:
            return math.nan
        return ece_equal_mass_from_hist(clf.hist_pos, clf.hist_neg, n_bins=len(clf.cal_count))

    def update(self, summary: Any) -> list[Finding]:
        """Test one window's calibration bins against the reference's; report ECE and Brier beside."""
        clf = summary.classifier
        self.drift_detected = False
        if clf is None or np.sum(clf.cal_count) == 0:
            return []
        window = _cal(clf)
        findings = []
        if np.sum(clf.cal_count) >= self.min_labeled:
            hl = calibration_hl(window, self.reference, self.min_expected)
            self.drift_detected = hl.p_value < self.alpha
            threshold = float(stats.chi2.isf(self.alpha, hl.df)) if hl.df > 0 else math.inf
            findings.append(
                Finding("calibration_hl", hl.statistic, threshold, self.drift_detected, p_value=hl.p_value,
                        detail={"df": hl.df, "alpha": self.alpha})
            )
        rows = [row._asdict() for row in reliability_table(*window)]
        detail = {"reference": self.reference_ece, "mce": max_calibration_error(*window), "reliability": rows}
        findings.append(Finding("ece", ece(*window), None, False, detail=detail))
        ece_mass = self._ece_mass(clf)
        if not math.isnan(ece_mass):
            mass_detail = {"reference": self.reference_ece_mass}
            findings.append(Finding("ece_equal_mass", ece_mass, None, False, detail=mass_detail))
        if clf.prob_labeled > 0:
            brier = clf.brier_sum / clf.prob_labeled
            findings.append(Finding("brier", brier, None, False, detail={"reference": self.reference_brier}))
        return findings

    def state_dict(self) -> dict[str, Any]:
        return {
            "reference": [a.tolist() for a in self.reference],
            "reference_ece": self.reference_ece,
            "reference_ece_mass": None if math.isnan(self.reference_ece_mass) else self.reference_ece_mass,
            "reference_brier": None if math.isnan(self.reference_brier) else self.reference_brier,
            "alpha": self.alpha,
            "min_labeled": self.min_labeled,
            "min_expected": self.min_expected,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        det = cls.__new__(cls)
        det.reference = _bins(*state["reference"])
        det.reference_ece = state["reference_ece"]
        det.reference_ece_mass = math.nan if state["reference_ece_mass"] is None else state["reference_ece_mass"]
        det.reference_brier = math.nan if state["reference_brier"] is None else state["reference_brier"]
        det.alpha, det.min_labeled, det.min_expected = state["alpha"], state["min_labeled"], state["min_expected"]
        det.drift_detected = False
        return det
