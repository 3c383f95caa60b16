"""Performance metrics from counts, checked against sklearn/scipy on the same raw data, and the detectors'
false-alarm rates and power measured on simulated windows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.optimize import minimize_scalar
from sklearn import metrics

from driftline.detectors.drop_tests import _restricted_mle, normal_sf, proportion_drop_pvalue
from driftline.detectors.estimated_accuracy import (
    EstimatedAccuracy,
    confidence_sd,
    confidence_variance,
    expected_accuracy,
)
from driftline.detectors.performance_drop import PerformanceDrop
from driftline.detectors.performance_metrics import (
    accuracy,
    f1_macro,
    f1_macro_variance,
    f1_weighted,
    hanley_mcneil_se,
    mean_loss,
    mse_variance,
    precision_recall_f1,
    rmse,
    roc_auc_from_hist,
    roc_auc_tie_bound,
)
from driftline.detectors.summaries import ReferenceProfile, WindowSummary

BINS = 100


def _hist(scores: np.ndarray, bins: int = BINS) -> np.ndarray:
    return np.bincount(np.minimum((scores * bins).astype(np.int64), bins - 1), minlength=bins)


CLASSES = ["neg", "pos"]
BINARY = ReferenceProfile.fit({"x": np.arange(10.0)}, classes=CLASSES)
REGRESSION = ReferenceProfile.fit({"x": np.arange(10.0)}, values=np.linspace(-3, 3, 100))
MULTICLASS = ReferenceProfile.fit({"x": np.arange(10.0)}, classes=["a", "b", "c"])
MULTICLASS4 = ReferenceProfile.fit({"x": np.arange(10.0)}, classes=["0", "1", "2", "3"])


def _binary_summary(p: np.ndarray, y: np.ndarray) -> WindowSummary:
    """A binary window: every prediction scored (for CBPE) and labelled."""
    w = WindowSummary.empty(BINARY)
    w.add_predictions(None, {}, {}, scores=p)
    w.add_labels(labels=np.where(y == 1, "pos", "neg").tolist(), scores=p)
    return w


def _regression_summary(err: np.ndarray) -> WindowSummary:
    w = WindowSummary.empty(REGRESSION)
    w.add_labels(values=err, true_values=np.zeros(err.size))
    return w


def _multiclass_summary(y: np.ndarray, pred: np.ndarray) -> WindowSummary:
    names = np.array(["a", "b", "c"])
    w = WindowSummary.empty(MULTICLASS)
    w.add_labels(labels=names[y].tolist(), predicted=names[pred].tolist())
    return w


def test_normal_sf_matches_scipy() -> None:
    z = np.array([-8.0, -2.0, 0.0, 0.5, 2.326, 5.0, 12.0, 30.0])
    np.testing.assert_allclose([normal_sf(float(v)) for v in z], stats.norm.sf(z), rtol=1e-12)


def test_confusion_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.choice(5, size=3000, p=[0.4, 0.3, 0.2, 0.1, 0.0])
    y_pred = np.where(rng.random(3000) < 0.7, y_true, rng.choice([0, 1, 2, 3], size=3000))
    conf = metrics.confusion_matrix(y_true, y_pred, labels=range(5))
    prec, rec, f1, _ = metrics.precision_recall_fscore_support(y_true, y_pred, labels=range(5), zero_division=0)
    ours = precision_recall_f1(conf)
    np.testing.assert_allclose(ours[0], prec, atol=1e-12)
    np.testing.assert_allclose(ours[1], rec, atol=1e-12)
    np.testing.assert_allclose(ours[2], f1, atol=1e-12)
    assert accuracy(conf) == pytest.approx(metrics.accuracy_score(y_true, y_pred), abs=1e-12)
    assert f1_macro(conf) == pytest.approx(metrics.f1_score(y_true, y_pred, average="macro"), abs=1e-12)
    assert f1_weighted(conf) == pytest.approx(metrics.f1_score(y_true, y_pred, average="weighted"), abs=1e-12)


def test_f1_macro_variance_matches_monte_carlo() -> None:
    rng = np.random.default_rng(2)
    pi = np.array([[0.30, 0.05, 0.02], [0.06, 0.25, 0.04], [0.03, 0.05, 0.20]])
    n = 2000
    draws = rng.multinomial(n, pi.ravel(), size=20000).reshape(-1, 3, 3).astype(np.float64)
    tp = np.diagonal(draws, axis1=1, axis2=2)
    f1 = (2 * tp / (draws.sum(axis=1) + draws.sum(axis=2))).mean(axis=1)
    delta = f1_macro_variance(pi * n)
    assert delta == pytest.approx(f1.var(), rel=0.05)


def test_roc_auc_exact_on_bin_centres() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=5000)
    scores = (np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1 - 1e-9) * BINS).astype(int)
    scores = (scores + 0.5) / BINS
    auc = roc_auc_from_hist(_hist(scores[y == 1]), _hist(scores[y == 0]))
    assert auc == pytest.approx(metrics.roc_auc_score(y, scores), abs=1e-12)


@pytest.mark.parametrize("bins", [10, 100])
def test_roc_auc_within_tie_bound_on_raw_scores(bins: int) -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=20000)
    scores = stats.norm.cdf(rng.normal(y * 1.2, 1.0))
    pos, neg = _hist(scores[y == 1], bins), _hist(scores[y == 0], bins)
    err = abs(roc_auc_from_hist(pos, neg) - metrics.roc_auc_score(y, scores))
    bound = roc_auc_tie_bound(pos, neg)
    assert 0 < err <= bound


def test_hanley_mcneil_matches_monte_carlo_spread() -> None:
    rng = np.random.default_rng(5)
    n_pos, n_neg, reps = 150, 250, 4000
    s = np.concatenate([rng.normal(1.2, 1, (reps, n_pos)), rng.normal(0, 1, (reps, n_neg))], axis=1)
    ranks = stats.rankdata(s, axis=1)[:, :n_pos].sum(axis=1)
    aucs = (ranks - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    se = hanley_mcneil_se(float(aucs.mean()), n_pos, n_neg)
    assert se == pytest.approx(aucs.std(), rel=0.1)


def test_losses_match_sklearn() -> None:
    rng = np.random.default_rng(6)
    p = rng.beta(2, 3, size=4000)
    y = (rng.random(4000) < p).astype(int)
    clf = _binary_summary(p, y).classifier
    assert mean_loss(clf.logloss_sum, clf.labeled) == pytest.approx(metrics.log_loss(y, p), rel=1e-12)
    assert mean_loss(clf.brier_sum, clf.labeled) == pytest.approx(metrics.brier_score_loss(y, p), rel=1e-12)
    probs = rng.dirichlet([2, 2, 2], size=500)
    yk = (rng.random((500, 1)) > probs.cumsum(axis=1)).sum(axis=1)
    w = WindowSummary.empty(MULTICLASS)
    w.add_labels(labels=np.array(["a", "b", "c"])[yk].tolist(), probabilities=probs)
    mc = w.classifier
    assert mean_loss(mc.logloss_sum, mc.prob_labeled) == pytest.approx(metrics.log_loss(yk, probs), rel=1e-12)


def test_regression_errors_match_sklearn() -> None:
    rng = np.random.default_rng(7)
    y, pred = rng.normal(size=3000), rng.normal(size=3000)
    reg = _regression_summary(pred - y).regression
    assert mean_loss(reg.sum_abs_err, reg.labeled) == pytest.approx(metrics.mean_absolute_error(y, pred), rel=1e-12)
    assert rmse(reg.sum_sq_err, reg.labeled) == pytest.approx(metrics.root_mean_squared_error(y, pred), rel=1e-12)


def test_mse_variance_matches_monte_carlo() -> None:
    rng = np.random.default_rng(8)
    err = rng.normal(0.5, 2.0, size=(20000, 200))
    mse = (err**2).mean(axis=1)
    assert mse_variance(0.5 * 200, (4.0 + 0.25) * 200, 200) == pytest.approx(mse.var(), rel=0.05)


def test_pooled_test_is_half_the_chi_squared_pvalue() -> None:
    """Equal sizes and margin 0: the skewness term vanishes, leaving the pooled z-test (z^2 = chi^2)."""
    for x_ref, x_new, n in [(900, 850, 1000), (50, 40, 80), (300, 280, 310)]:
        table = [[x_ref, n - x_ref], [x_new, n - x_new]]
        chi2 = stats.chi2_contingency(table, correction=False)
        assert proportion_drop_pvalue(x_ref, n, x_new, n) == pytest.approx(chi2.pvalue / 2, rel=1e-9)


def test_restricted_mle_maximises_the_likelihood() -> None:
    rng = np.random.default_rng(9)
    for _ in range(50):
        n1, n2 = (int(v) for v in rng.integers(5, 2000, size=2))
        x1, x2 = int(rng.integers(0, n1 + 1)), int(rng.integers(0, n2 + 1))
        delta = float(rng.uniform(0.001, 0.4))
        r1, r2 = _restricted_mle(x1 / n1, n1, x2 / n2, n2, delta)

        def nll(q2: float, x1: int = x1, x2: int = x2, n1: int = n1, n2: int = n2, d: float = delta) -> float:
            q1 = q2 + d
            return -(x1 * np.log(q1) + (n1 - x1) * np.log1p(-q1) + x2 * np.log(q2) + (n2 - x2) * np.log1p(-q2))

        opt = minimize_scalar(nll, bounds=(1e-12, 1 - delta - 1e-12), method="bounded", options={"xatol": 1e-12})
        assert r1 - r2 == pytest.approx(delta, abs=1e-12)
        assert r2 == pytest.approx(opt.x, abs=1e-6)


@pytest.mark.parametrize(
    ("n_ref", "n_new", "p_new", "margin"),
    [(400, 250, 0.9, 0.0), (1800, 200, 0.85, 0.05), (5000, 100, 0.97, 0.0), (100, 2000, 0.9, 0.0)],
)
def test_proportion_test_exact_size(n_ref: int, n_new: int, p_new: float, margin: float) -> None:
    """Exact type-I error at the null boundary, enumerating every outcome of both binomials, at the alphas
    the detectors use directly (0.01) and after Bonferroni/BH over many slices (0.001)."""
    p_ref = p_new + margin
    x_ref, x_new = np.arange(n_ref + 1), np.arange(n_new + 1)
    w_ref, w_new = stats.binom.pmf(x_ref, n_ref, p_ref), stats.binom.pmf(x_new, n_new, p_new)
    keep_ref, keep_new = w_ref > 1e-10, w_new > 1e-10
    pvals = np.array(
        [
            [proportion_drop_pvalue(int(a), n_ref, int(b), n_new, margin) for b in x_new[keep_new]]
            for a in x_ref[keep_ref]
        ]
    )
    weights = np.outer(w_ref[keep_ref], w_new[keep_new])
    for alpha in (0.001, 0.01):
        assert 0.6 * alpha < weights[pvals < alpha].sum() < 1.1 * alpha


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    n_ref=st.integers(100, 20000),
    n_new=st.integers(20, 500),
    ref_frac=st.floats(0, 1),
    margin=st.sampled_from([0.0, 1e-9, 0.01, 0.05, 0.5, 0.99]),
)
def test_proportion_pvalue_is_a_monotone_probability(n_ref: int, n_new: int, ref_frac: float, margin: float) -> None:
    """p in [0, 1], and where there is any evidence of a drop (p < 0.5) it only weakens as the window gets
    more right (the skewness correction bends p near 1, where no decision is taken; with references of
    fewer than ~50 labels it can also bend near 0.5)."""
    x_ref = round(ref_frac * n_ref)
    p = np.array([proportion_drop_pvalue(x_ref, n_ref, x, n_new, margin) for x in range(n_new + 1)])
    assert np.all((p >= 0) & (p <= 1))
    evidence = p[: np.argmax(p >= 0.5)] if (p >= 0.5).any() else p
    assert np.all(np.diff(evidence) >= -1e-12)


def _binary_windows(rng: np.random.Generator, windows: int, n: int, a: float = 2.0, b: float = 2.0) -> np.ndarray:
    return rng.beta(a, b, size=(windows, n))


def test_performance_drop_false_alarm_rate() -> None:
    rng = np.random.default_rng(10)
    alarms = total = 0
    for _ in range(5):
        p = _binary_windows(rng, 1, 20000)[0]
        det = PerformanceDrop(_binary_summary(p, (rng.random(p.size) < p).astype(int)))
        windows = _binary_windows(rng, 400, 500)
        labels = (rng.random(windows.shape) < windows).astype(int)
        for pw, yw in zip(windows, labels, strict=True):
            findings = det.update(_binary_summary(pw, yw))
            assert {f.metric for f in findings} == {"accuracy", "f1_macro", "roc_auc", "log_loss", "brier"}
            alarms += det.drift_detected
            total += 1
    rate, alpha = alarms / total, 0.01
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / total)


def test_performance_drop_detects_quality_loss() -> None:
    rng = np.random.default_rng(11)
    p = rng.beta(2, 2, size=20000)
    det = PerformanceDrop(_binary_summary(p, (rng.random(p.size) < p).astype(int)))
    pw = rng.beta(2, 2, size=1000)
    noisy = np.where(rng.random(1000) < 0.3, rng.random(1000), pw)
    yw = (rng.random(1000) < noisy).astype(int)
    found = {f.metric: f for f in det.update(_binary_summary(pw, yw))}
    assert found["accuracy"].breached and found["roc_auc"].breached and found["f1_macro"].breached
    assert found["accuracy"].value < found["accuracy"].detail["reference"]
    assert not found["log_loss"].breached and found["log_loss"].threshold is None
    small = det.update(_binary_summary(pw[:50], yw[:50]))
    assert not any(f.breached for f in small) and all(f.threshold is None for f in small)


def test_performance_drop_respects_margin() -> None:
    rng = np.random.default_rng(12)
    p = rng.beta(2, 2, size=50000)
    ref = _binary_summary(p, (rng.random(p.size) < p).astype(int))
    pw = rng.beta(2, 2, size=20000)
    yw = (rng.random(pw.size) < np.clip(pw + np.where(pw >= 0.5, -0.04, 0.04), 0, 1)).astype(int)
    window = _binary_summary(pw, yw)
    assert PerformanceDrop(ref).update(window)[0].breached
    assert not PerformanceDrop(ref, margin=0.1).update(window)[0].breached


def test_rmse_increase_and_false_alarms() -> None:
    rng = np.random.default_rng(13)
    det = PerformanceDrop(_regression_summary(rng.normal(0.1, 1.0, size=20000)), rmse_margin=0.0)
    windows = rng.normal(0.1, 1.0, size=(3000, 300))
    alarms = sum(det.update(_regression_summary(w))[0].breached for w in windows)
    assert alarms / 3000 <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / 3000)
    worse = det.update(_regression_summary(rng.normal(0.1, 1.2, size=500)))
    assert [f.metric for f in worse] == ["rmse", "mae"] and worse[0].breached
    assert not PerformanceDrop.from_state(det.state_dict() | {"rmse_margin": 0.5}).update(
        _regression_summary(rng.normal(0.1, 1.2, size=500))
    )[0].breached


def test_state_round_trip() -> None:
    rng = np.random.default_rng(14)
    p = rng.beta(2, 2, size=5000)
    summary = _binary_summary(p, (rng.random(p.size) < p).astype(int))
    det = PerformanceDrop(summary, alpha=0.05, margin=0.01)
    clone = PerformanceDrop.from_state(json.loads(json.dumps(det.state_dict(), allow_nan=False)))
    assert clone.update(summary) == det.update(summary)
    est = EstimatedAccuracy(summary, alpha=0.05)
    assert EstimatedAccuracy.from_state(json.loads(json.dumps(est.state_dict()))).update(summary) == est.update(summary)
    reg = _regression_summary(rng.normal(size=500))
    reg_det = PerformanceDrop(reg)
    reg_clone = PerformanceDrop.from_state(json.loads(json.dumps(reg_det.state_dict(), allow_nan=False)))
    assert reg_clone.update(reg) == reg_det.update(reg)


def test_confidence_statistics_within_bin_bound() -> None:
    rng = np.random.default_rng(15)
    for bins in (10, 100):
        c = rng.beta(5, 1, size=10000)
        exact = float((c * (1 - c)).sum())
        assert abs(confidence_variance(_hist(c, bins)) - exact) <= c.size / (2 * bins)
        assert abs(confidence_sd(_hist(c, bins), binary=False) - c.std()) <= 1 / (2 * bins)
        p = rng.beta(2, 2, size=10000)
        assert abs(confidence_sd(_hist(p, bins), binary=True) - np.maximum(p, 1 - p).std()) <= 1 / (2 * bins)


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_estimated_accuracy_covers_realised_accuracy(kind: str) -> None:
    """Calibrated scores, every prediction labelled: the CBPE interval holds the realised accuracy."""
    rng = np.random.default_rng(16)
    windows, n = 1000, 500
    covered99 = covered95 = 0
    for _ in range(windows):
        if kind == "binary":
            p = rng.beta(2, 3, size=n)
            w = _binary_summary(p, (rng.random(n) < p).astype(int))
        else:
            probs = rng.dirichlet(np.full(4, 0.7), size=n)
            y = (rng.random((n, 1)) > probs.cumsum(axis=1)).sum(axis=1)
            w = WindowSummary.empty(MULTICLASS4)
            w.add_predictions(None, {}, {}, probabilities=probs)
            w.add_labels(labels=[str(v) for v in y], probabilities=probs)
        clf = w.classifier
        realised = accuracy(clf.confusion)
        _, lo, hi = expected_accuracy(clf.expected_correct, clf.score_hist, level=0.99)
        covered99 += lo <= realised <= hi
        _, lo, hi = expected_accuracy(clf.expected_correct, clf.score_hist, level=0.95)
        covered95 += lo <= realised <= hi
    assert covered99 / windows >= 0.95
    assert abs(covered95 / windows - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / windows)


def test_estimated_accuracy_detector() -> None:
    rng = np.random.default_rng(17)
    p = rng.beta(2, 3, size=20000)
    det = EstimatedAccuracy(_binary_summary(p, (rng.random(p.size) < p).astype(int)))
    windows = rng.beta(2, 3, size=(1000, 1000))
    alarms = 0
    for pw in windows:
        (f,) = det.update(_binary_summary(pw, (rng.random(pw.size) < pw).astype(int)))
        alarms += f.breached
        assert f.metric == "estimated_accuracy" and f.detail["lower"] <= f.value <= f.detail["upper"]
        assert "accuracy" in f.detail
    assert alarms / 1000 <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / 1000)
    uncertain = rng.beta(5, 5, size=1000)
    (f,) = det.update(_binary_summary(uncertain, (rng.random(1000) < uncertain).astype(int)))
    assert f.breached and f.value < f.detail["reference"]


def test_macro_f1_drop_when_a_minority_class_collapses() -> None:
    """Class c (10% of traffic) loses most of its recall: macro F1 falls much more than accuracy."""
    rng = np.random.default_rng(18)

    def draw(n: int, recall_c: float) -> WindowSummary:
        y = rng.choice(3, size=n, p=[0.5, 0.4, 0.1])
        keep = rng.random(n) < np.where(y == 2, recall_c, 0.9)
        return _multiclass_summary(y, np.where(keep, y, (y + rng.integers(1, 3, size=n)) % 3))

    det = PerformanceDrop(draw(20000, 0.9))
    alarms = sum(det.update(draw(500, 0.9))[1].breached for _ in range(500))
    assert alarms / 500 <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / 500)
    found = {f.metric: f for f in det.update(draw(2000, 0.3))}
    assert found["f1_macro"].breached and "roc_auc" not in found
    assert found["f1_macro"].detail["per_class"]["c"]["recall"] < 0.45
    assert found["f1_macro"].detail["f1_weighted"] > found["f1_macro"].value
