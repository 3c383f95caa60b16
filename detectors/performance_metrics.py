"""Model quality metrics from labelled window counts: accuracy, F1 and its variance, ROC AUC, losses, RMSE.

Every metric is computed from the mergeable counts of a `WindowSummary` (confusion matrix, score
histograms, loss sums), never from raw events, so a window merged from partitions gives the same answer.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


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
