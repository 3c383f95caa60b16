"""Model quality from labelled window counts, and tests that it dropped against the reference.

Every metric is computed from the mergeable counts of a `WindowSummary` (confusion matrix, score
histograms, loss sums), never from raw events, so a window merged from partitions gives the same answer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike

from driftline.detectors.findings import Finding


def normal_sf(z: float) -> float:
    """Standard normal upper tail, via erfc (accurate far into the tail, ~20x faster than scipy per call).

    >>> round(normal_sf(2.326), 4)
    0.01
    """
    return 0.5 * math.erfc(z / math.sqrt(2))


def accuracy(confusion: ArrayLike) -> float:
    """Fraction of labelled predictions on the diagonal (rows = true class, cols = predicted).

    >>> accuracy([[5, 1], [2, 2]])
    0.7
    """
    c = np.asarray(confusion, dtype=np.float64)
    total = c.sum()
    return float(np.trace(c) / total) if total > 0 else float("nan")


def precision_recall_f1(confusion: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1; 0 where undefined (sklearn's ``zero_division=0``).

    >>> [a.round(3).tolist() for a in precision_recall_f1([[5, 1], [2, 2]])]
    [[0.714, 0.667], [0.833, 0.5], [0.769, 0.571]]
    """
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    predicted, actual = c.sum(axis=0), c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(predicted + actual > 0, 2 * tp / (predicted + actual), 0.0)
    return precision, recall, f1


def f1_macro(confusion: ArrayLike) -> float:
    """Unweighted mean F1 over the classes that occur as label or prediction (sklearn's default labels).

    >>> round(f1_macro([[5, 1], [2, 2]]), 4)
    0.6703
    """
    c = np.asarray(confusion, dtype=np.float64)
    present = (c.sum(axis=0) + c.sum(axis=1)) > 0
    return float(precision_recall_f1(c)[2][present].mean()) if present.any() else float("nan")


def f1_weighted(confusion: ArrayLike) -> float:
    """Mean F1 weighted by each class's number of true labels (sklearn ``average='weighted'``).

    >>> round(f1_weighted([[5, 1], [2, 2]]), 4)
    0.6901
    """
    c = np.asarray(confusion, dtype=np.float64)
    support = c.sum(axis=1)
    return float(precision_recall_f1(c)[2] @ support / support.sum()) if support.sum() > 0 else float("nan")


def f1_macro_variance(confusion: ArrayLike) -> float:
    """Delta-method variance of macro F1 when the confusion cells are one multinomial sample.

    Macro F1 = mean_k 2 C_kk / (R_k + K_k) (R row sum, K column sum). With G its gradient in the cell
    counts, Var ~= sum C G^2 - (sum C G)^2 / N (the second term is 0 since F1 is scale-free). This is the
    bootstrap-free test statistic's variance; the tests check it against Monte Carlo resampling.

    >>> round(f1_macro_variance([[50, 10], [20, 20]]), 5)
    0.00239
    """
    c = np.asarray(confusion, dtype=np.float64)
    n = c.sum()
    denom = c.sum(axis=0) + c.sum(axis=1)
    present = denom > 0
    if n == 0:
        return float("nan")
    safe = np.where(present, denom, 1.0)
    h = np.where(present, 2 * np.diag(c) / safe**2, 0.0)
    grad = np.diag(np.where(present, 2 / safe, 0.0)) - (h[:, None] + h[None, :])
    grad /= present.sum()
    return float(max((c * grad**2).sum() - (c * grad).sum() ** 2 / n, 0.0))


def roc_auc_from_hist(hist_pos: ArrayLike, hist_neg: ArrayLike) -> float:
    """ROC AUC from score histograms of labelled positives and negatives (same bins, ascending scores).

    It is the trapezoid over the bin thresholds, i.e. P(s+ > s-) + P(same bin) / 2. Pairs in different
    bins are ordered exactly, pairs sharing a bin count one half, so against the exact AUC of the raw
    scores the error is at most ``roc_auc_tie_bound`` = sum_b pos_b neg_b / (2 P N), and it is exact when
    scores sit on one value per bin (e.g. the bin centres).

    >>> roc_auc_from_hist([0, 1, 3], [2, 1, 0])
    0.9583333333333334
    """
    pos = np.asarray(hist_pos, dtype=np.float64)
    neg = np.asarray(hist_neg, dtype=np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float((pos * (below + neg / 2)).sum() / (n_pos * n_neg))


def roc_auc_tie_bound(hist_pos: ArrayLike, hist_neg: ArrayLike) -> float:
    """Largest possible |histogram AUC - exact AUC|: half the share of (pos, neg) pairs sharing a bin.

    >>> roc_auc_tie_bound([0, 1, 3], [2, 1, 0])
    0.041666666666666664
    """
    pos = np.asarray(hist_pos, dtype=np.float64)
    neg = np.asarray(hist_neg, dtype=np.float64)
    return float((pos * neg).sum() / (2 * pos.sum() * neg.sum()))


def hanley_mcneil_se(auc: float, n_pos: float, n_neg: float) -> float:
    """Hanley & McNeil (1982) standard error of an AUC estimate, so AUC drops are tested without resampling.

    >>> round(hanley_mcneil_se(0.9, 100, 100), 4)
    0.0226
    """
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def mean_loss(loss_sum: float, labeled: int) -> float:
    """Mean of a summed per-event loss (log loss, Brier score, absolute error).

    >>> mean_loss(3.0, 4)
    0.75
    """
    return loss_sum / labeled if labeled > 0 else float("nan")


def rmse(sum_sq_err: float, labeled: int) -> float:
    """Root mean squared error from the summed squared errors.

    >>> rmse(8.0, 2)
    2.0
    """
    return math.sqrt(sum_sq_err / labeled) if labeled > 0 else float("nan")


def mse_variance(sum_err: float, sum_sq_err: float, labeled: int) -> float:
    """Variance of the mean squared error, assuming normal errors: (2 s^4 + 4 m^2 s^2) / n.

    The summary has no fourth moment of the errors, so heavy-tailed errors make this too small.

    >>> mse_variance(0.0, 100.0, 100)
    0.02
    """
    m = sum_err / labeled
    s2 = max(sum_sq_err / labeled - m * m, 0.0)
    return (2 * s2 * s2 + 4 * m * m * s2) / labeled


def _restricted_mle(p1: float, n1: int, p2: float, n2: int, delta: float) -> tuple[float, float]:
    """Maximum-likelihood (p1, p2) under p1 - p2 = delta: Farrington & Manning's (1990) cubic root."""
    if delta == 0:
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        return pooled, pooled
    theta = n2 / n1
    a = 1 + theta
    b = -(1 + theta + p1 + theta * p2 + delta * (theta + 2))
    c = delta * delta + delta * (2 * p1 + theta + 1) + p1 + theta * p2
    d = -p1 * delta * (1 + delta)
    v = b**3 / (27 * a**3) - b * c / (6 * a * a) + d / (2 * a)
    u = math.copysign(math.sqrt(max(b * b / (9 * a * a) - c / (3 * a), 0.0)), v)
    w = (math.pi + math.acos(min(max(v / u**3, -1.0), 1.0))) / 3 if u != 0 else math.pi / 2
    r1 = min(max(2 * u * math.cos(w) - b / (3 * a), delta), 1.0)
    return r1, r1 - delta


def proportion_drop_pvalue(x_ref: int, n_ref: int, x_new: int, n_new: int, margin: float = 0.0) -> float:
    """One-sided p-value of H0: p_new >= p_ref - margin against H1: p_new < p_ref - margin.

    Farrington-Manning score test (variance at the maximum-likelihood proportions restricted to the null
    boundary, which keeps the level near 0 and 1 where a Wald test fails) with Gart-Nam's skewness
    correction: accuracies near 1 have a long lower tail, and without it a 200-event slice at 90% alarms at
    twice the nominal rate at alpha = 0.001 (the deep tail that Bonferroni/BH use). The tests enumerate
    both binomials to check the exact size. With margin 0 and equal sizes it is the pooled two-proportion
    z-test (z^2 = Pearson chi-squared).

    >>> round(proportion_drop_pvalue(900, 1000, 170, 200), 4)
    0.0222
    """
    if not 0 <= margin < 1:
        raise ValueError("margin must be in [0, 1)")
    p_ref, p_new = x_ref / n_ref, x_new / n_new
    r_ref, r_new = _restricted_mle(p_ref, n_ref, p_new, n_new, margin)
    var = r_ref * (1 - r_ref) / n_ref + r_new * (1 - r_new) / n_new
    diff = p_ref - p_new - margin
    if var == 0:
        return 0.5 if diff == 0 else float(diff < 0)
    z = diff / math.sqrt(var)
    third = r_ref * (1 - r_ref) * (1 - 2 * r_ref) / n_ref**2 - r_new * (1 - r_new) * (1 - 2 * r_new) / n_new**2
    a = third / (6 * var**1.5)
    if abs(a) > 1e-12:
        # Cornish-Fisher: the standardised statistic's quantile is z + a (z^2 - 1); invert it for z.
        disc = 1 + 4 * a * (a + z)
        z = (math.sqrt(disc) - 1) / (2 * a) if disc >= 0 else -1 / (2 * a)
    # A window at or above the boundary is no evidence of a drop, whatever the skew says.
    return normal_sf(z) if diff > 0 else max(normal_sf(z), 0.5)


def normal_drop_pvalue(ref: float, ref_var: float, new: float, new_var: float, margin: float = 0.0) -> float:
    """One-sided p-value of H0: new >= ref - margin for two independent, approximately normal estimates.

    >>> round(normal_drop_pvalue(0.9, 0.0001, 0.85, 0.0004), 4)
    0.0127
    """
    se = math.sqrt(ref_var + new_var)
    diff = ref - new - margin
    if se == 0:
        return 0.0 if diff > 0 else 1.0
    return normal_sf(diff / se)


@dataclass(frozen=True, slots=True)
class _Baseline:
    """The reference's numbers that the tests need; plain floats so the detector state is JSON-able."""

    labeled: int = 0
    correct: int = 0
    f1: float = math.nan
    f1_var: float = math.nan
    auc: float = math.nan
    n_pos: int = 0
    n_neg: int = 0
    log_loss: float = math.nan
    brier: float = math.nan
    reg_labeled: int = 0
    log_mse: float = math.nan
    log_mse_var: float = math.nan
    mae: float = math.nan


def _json_float(v: Any) -> Any:
    """NaN as None, so the state survives strict JSON encoders."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _stats(summary: Any) -> _Baseline:
    fields: dict[str, Any] = {}
    clf = summary.classifier
    if clf is not None and clf.labeled > 0:
        conf = np.asarray(clf.confusion)
        fields.update(
            labeled=int(conf.sum()),
            correct=int(np.trace(conf)),
            f1=f1_macro(conf),
            f1_var=f1_macro_variance(conf),
            log_loss=mean_loss(clf.logloss_sum, clf.prob_labeled),
            brier=mean_loss(clf.brier_sum, clf.prob_labeled),
        )
        if len(clf.classes) == 2:
            n_pos, n_neg = int(np.sum(clf.hist_pos)), int(np.sum(clf.hist_neg))
            fields.update(auc=roc_auc_from_hist(clf.hist_pos, clf.hist_neg), n_pos=n_pos, n_neg=n_neg)
    reg = summary.regression
    if reg is not None and reg.labeled > 0 and reg.sum_sq_err > 0:
        mse = reg.sum_sq_err / reg.labeled
        var = mse_variance(reg.sum_err, reg.sum_sq_err, reg.labeled)
        fields.update(
            reg_labeled=int(reg.labeled),
            log_mse=math.log(mse),
            log_mse_var=var / mse**2,
            mae=mean_loss(reg.sum_abs_err, reg.labeled),
        )
    return _Baseline(**fields)


class PerformanceDrop:
    """Flags a window whose labelled quality is significantly worse than the reference's.

    Tests, one-sided: accuracy (skew-corrected Farrington-Manning score test), macro F1 (delta-method
    variance), ROC AUC for binary models (Hanley-McNeil standard errors), RMSE for regressors (log MSE,
    normal-error variance). False alarms: each window runs its m tests at alpha / m (Bonferroni), so a
    stationary window breaches with probability <= alpha; a metric is tested only with at least
    ``min_labeled`` labels (and ``min_per_class`` of each class for AUC). ``margin`` is the tolerated
    absolute drop of accuracy, F1 and AUC; ``rmse_margin`` the tolerated relative RMSE increase. Log loss,
    Brier and MAE are reported beside their reference values but not tested (the summary has no per-event
    variance for them).

    >>> import numpy as np
    >>> from driftline.detectors.summaries import ReferenceProfile, WindowSummary
    >>> profile = ReferenceProfile.fit({"x": np.arange(10.0)}, classes=["no", "yes"])
    >>> def window(seed, noise):
    ...     rng = np.random.default_rng(seed)
    ...     p = rng.random(2000)
    ...     truth = np.where(rng.random(2000) < noise, rng.random(2000), p)
    ...     w = WindowSummary.empty(profile)
    ...     w.add_labels(labels=np.where(rng.random(2000) < truth, "yes", "no").tolist(), scores=p)
    ...     return w
    >>> det = PerformanceDrop(window(0, noise=0.0))
    >>> [(f.metric, f.breached) for f in det.update(window(1, noise=0.5))]
    [('accuracy', True), ('f1_macro', True), ('roc_auc', True), ('log_loss', False), ('brier', False)]
    """

    def __init__(
        self,
        reference: Any,
        *,
        alpha: float = 0.01,
        margin: float = 0.0,
        rmse_margin: float = 0.0,
        min_labeled: int = 200,
        min_per_class: int = 30,
    ) -> None:
        self.baseline = _stats(reference)
        if self.baseline.labeled == 0 and self.baseline.reg_labeled == 0:
            raise ValueError("needs a reference with ground-truth labels")
        self.alpha, self.margin, self.rmse_margin = alpha, margin, rmse_margin
        self.min_labeled, self.min_per_class = min_labeled, min_per_class
        self.drift_detected = False

    def _finding(self, metric: str, value: float, ref: float, p: float | None, alpha: float, extra: Any) -> Finding:
        margin = self.rmse_margin if metric == "rmse" else self.margin
        threshold = ref * (1 + margin) if metric == "rmse" else ref - margin
        return Finding(
            metric=metric,
            value=value,
            threshold=None if p is None else threshold,
            breached=p is not None and p < alpha,
            p_value=p,
            detail={"reference": ref, "alpha": alpha, **extra},
        )

    def update(self, summary: Any) -> list[Finding]:
        """Test one window against the reference; return one finding per computable metric."""
        ref, win = self.baseline, _stats(summary)
        tests: list[tuple[str, float, float, float | None]] = []
        info: list[tuple[str, float, float]] = []
        if win.labeled > 0 and ref.labeled > 0:
            enough = win.labeled >= self.min_labeled and ref.labeled >= self.min_labeled
            acc_p = proportion_drop_pvalue(ref.correct, ref.labeled, win.correct, win.labeled, self.margin)
            f1_p = normal_drop_pvalue(ref.f1, ref.f1_var, win.f1, win.f1_var, self.margin)
            tests.append(("accuracy", win.correct / win.labeled, ref.correct / ref.labeled, acc_p if enough else None))
            tests.append(("f1_macro", win.f1, ref.f1, f1_p if enough else None))
            if not (math.isnan(win.auc) or math.isnan(ref.auc)):
                enough_auc = min(win.n_pos, win.n_neg, ref.n_pos, ref.n_neg) >= self.min_per_class
                auc_p = normal_drop_pvalue(
                    ref.auc,
                    hanley_mcneil_se(ref.auc, ref.n_pos, ref.n_neg) ** 2,
                    win.auc,
                    hanley_mcneil_se(win.auc, win.n_pos, win.n_neg) ** 2,
                    self.margin,
                )
                tests.append(("roc_auc", win.auc, ref.auc, auc_p if enough and enough_auc else None))
            if not math.isnan(win.log_loss):
                info += [("log_loss", win.log_loss, ref.log_loss), ("brier", win.brier, ref.brier)]
        if win.reg_labeled > 0 and ref.reg_labeled > 0:
            enough = min(win.reg_labeled, ref.reg_labeled) >= self.min_labeled
            rmse_p = normal_drop_pvalue(
                -ref.log_mse, ref.log_mse_var, -win.log_mse, win.log_mse_var, 2 * math.log1p(self.rmse_margin)
            )
            tests.append(("rmse", math.exp(win.log_mse / 2), math.exp(ref.log_mse / 2), rmse_p if enough else None))
            info.append(("mae", win.mae, ref.mae))
        alpha = self.alpha / max(sum(p is not None for *_, p in tests), 1)
        extra: dict[str, dict[str, Any]] = {}
        if win.labeled > 0:
            conf = np.asarray(summary.classifier.confusion)
            precision, recall, f1 = precision_recall_f1(conf)
            extra["f1_macro"] = {
                "f1_weighted": f1_weighted(conf),
                "per_class": {
                    str(c): {"precision": float(pr), "recall": float(rc), "f1": float(f)}
                    for c, pr, rc, f in zip(summary.classifier.classes, precision, recall, f1, strict=True)
                },
            }
        findings = [self._finding(m, v, r, p, alpha, extra.get(m, {})) for m, v, r, p in tests]
        findings += [Finding(m, v, None, False, detail={"reference": r}) for m, v, r in info]
        self.drift_detected = any(f.breached for f in findings)
        return findings

    def state_dict(self) -> dict[str, Any]:
        return {
            "baseline": {k: _json_float(v) for k, v in asdict(self.baseline).items()},
            "alpha": self.alpha,
            "margin": self.margin,
            "rmse_margin": self.rmse_margin,
            "min_labeled": self.min_labeled,
            "min_per_class": self.min_per_class,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        det = cls.__new__(cls)
        det.baseline = _Baseline(**{k: math.nan if v is None else v for k, v in state["baseline"].items()})
        det.alpha, det.margin, det.rmse_margin = state["alpha"], state["margin"], state["rmse_margin"]
        det.min_labeled, det.min_per_class = state["min_labeled"], state["min_per_class"]
        det.drift_detected = False
        return det


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
