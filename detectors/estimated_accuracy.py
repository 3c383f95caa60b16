"""The label-free performance detector (CBPE): a classifier's accuracy estimated from its calibrated scores,
tested for a drop against the reference's own estimate.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike

from driftline.detectors.drop_tests import normal_drop_pvalue
from driftline.detectors.findings import Finding
from driftline.detectors.performance_metrics import accuracy


def confidence_variance(score_hist: ArrayLike) -> float:
    """Sum over predictions of c (1 - c), c = confidence, from the score histogram's bin centres.

    For binary scores (p) c(1-c) = p(1-p); for multiclass the score is the confidence. As x(1-x) has slope
    at most 1, the error is at most n / (2 * bins).

    >>> confidence_variance([0, 10, 0, 10])
    3.4375
    """
    h = np.asarray(score_hist, dtype=np.float64)
    centres = (np.arange(h.size) + 0.5) / h.size
    return float(h @ (centres * (1 - centres)))


def confidence_sd(score_hist: ArrayLike, binary: bool) -> float:
    """Standard deviation of one prediction's confidence, from the score histogram's bin centres.

    Confidence is max(s, 1 - s) for a binary score s (the prediction thresholds at 0.5) and the score itself
    for multiclass. Binning moves each value by at most half a bin, so the error is at most 1 / (2 bins).

    >>> round(confidence_sd([0, 10, 0, 10], binary=False), 4)
    0.25
    """
    h = np.asarray(score_hist, dtype=np.float64)
    centres = (np.arange(h.size) + 0.5) / h.size
    c = np.maximum(centres, 1 - centres) if binary else centres
    mean = h @ c / h.sum()
    return math.sqrt(max(h @ (c - mean) ** 2 / h.sum(), 0.0))


def expected_accuracy(
    expected_correct: float, score_hist: ArrayLike, level: float = 0.99
) -> tuple[float, float, float]:
    """CBPE: with calibrated scores the window's accuracy is Poisson-binomial with mean sum c_i.

    Returns (estimate, lower, upper): a normal-approximation interval for the accuracy the window's labels
    will realise, with variance sum c_i (1 - c_i) / n^2 (see `confidence_variance`).

    >>> [round(x, 4) for x in expected_accuracy(16.0, [0, 10, 0, 10], level=0.95)]
    [0.8, 0.6183, 0.9817]
    """
    n = float(np.sum(score_hist))
    est = expected_correct / n
    half = NormalDist().inv_cdf(1 - (1 - level) / 2) * math.sqrt(confidence_variance(score_hist)) / n
    return est, max(est - half, 0.0), min(est + half, 1.0)


class EstimatedAccuracy:
    """Label-free accuracy estimate (CBPE) for classifiers with calibrated scores, tested for a drop.

    The window's estimate (expected_correct / n) is compared with the reference's own estimate, not its
    realised accuracy, so a slightly miscalibrated model does not alarm forever. False alarms: one-sided
    two-sample z-test at ``alpha`` on the mean confidence, each side's variance = var(confidence) / n from
    the score histogram (see `confidence_sd`); windows with fewer than ``min_count`` predictions are not
    tested. The finding's detail carries the
    Poisson-binomial interval (``level``) for the realised accuracy, and the realised accuracy when labels
    are in.

    >>> import numpy as np
    >>> from driftline.detectors.summaries import ReferenceProfile, WindowSummary
    >>> profile = ReferenceProfile.fit({"x": np.arange(10.0)}, classes=["no", "yes"])
    >>> def window(seed, a):
    ...     w = WindowSummary.empty(profile)
    ...     w.add_predictions(None, {}, {}, scores=np.random.default_rng(seed).beta(a, a, size=2000))
    ...     return w
    >>> det = EstimatedAccuracy(window(0, a=0.5))
    >>> f = det.update(window(1, a=5.0))[0]  # scores crowd 0.5: the model expects to be right less often
    >>> f.metric, round(f.value, 2), round(f.detail["reference"], 2), f.breached
    ('estimated_accuracy', 0.63, 0.82, True)
    """

    def __init__(
        self, reference: Any, *, alpha: float = 0.01, margin: float = 0.0, min_count: int = 100, level: float = 0.99
    ) -> None:
        clf = reference.classifier
        if clf is None or np.sum(clf.score_hist) == 0:
            raise ValueError("needs a reference with classifier predictions")
        self.reference_n = int(np.sum(clf.score_hist))
        self.reference_estimate = clf.expected_correct / self.reference_n
        self.reference_sd = confidence_sd(clf.score_hist, binary=len(clf.classes) == 2)
        self.alpha, self.margin, self.min_count, self.level = alpha, margin, min_count, level
        self.drift_detected = False

    def update(self, summary: Any) -> list[Finding]:
        """Estimate this window's accuracy and test it against the reference's estimate."""
        clf = summary.classifier
        n = int(np.sum(clf.score_hist)) if clf is not None else 0
        if n == 0:
            return []
        est, lower, upper = expected_accuracy(clf.expected_correct, clf.score_hist, self.level)
        ref = self.reference_estimate
        p = None
        if n >= self.min_count and self.reference_n >= self.min_count:
            win_var = confidence_sd(clf.score_hist, binary=len(clf.classes) == 2) ** 2 / n
            p = normal_drop_pvalue(ref, self.reference_sd**2 / self.reference_n, est, win_var, self.margin)
        detail: dict[str, Any] = {"lower": lower, "upper": upper, "level": self.level, "reference": ref}
        if clf.labeled > 0:
            detail.update(accuracy=accuracy(clf.confusion), labeled=int(clf.labeled))
        self.drift_detected = p is not None and p < self.alpha
        threshold = None if p is None else ref - self.margin
        return [
            Finding("estimated_accuracy", est, threshold, self.drift_detected, p_value=p, detail=detail)
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            "reference_n": self.reference_n,
            "reference_estimate": self.reference_estimate,
            "reference_sd": self.reference_sd,
            "alpha": self.alpha,
            "margin": self.margin,
            "min_count": self.min_count,
            "level": self.level,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        det = cls.__new__(cls)
        det.reference_n, det.reference_estimate = state["reference_n"], state["reference_estimate"]
        det.reference_sd = state["reference_sd"]
        det.alpha, det.margin, det.min_count, det.level = (
            state["alpha"], state["margin"], state["min_count"], state["level"]
        )
        det.drift_detected = False
        return det
