"""Calibration metrics from bins against torchmetrics/sklearn on the same raw data; the drift test's
false-alarm rate on >= 1,000,000 stationary events and its power against over-confidence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.calibration import calibration_curve
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from driftline.detectors.calibration import (
    CalibrationDrift,
    _mass_groups,
    calibration_hl,
    ece,
    ece_equal_mass,
    ece_equal_mass_from_hist,
    max_calibration_error,
    reliability_table,
)
from driftline.detectors.summaries import ReferenceProfile, WindowSummary

CAL_BINS, FINE_BINS = 15, 100


def _cal_bins(score: np.ndarray, y: np.ndarray, bins: int = CAL_BINS) -> tuple[np.ndarray, ...]:
    idx = np.minimum((score * bins).astype(np.int64), bins - 1)
    return (
        np.bincount(idx, minlength=bins),
        np.bincount(idx, weights=score, minlength=bins),
        np.bincount(idx, weights=y.astype(np.float64), minlength=bins),
    )


def _hist(scores: np.ndarray, bins: int = FINE_BINS) -> np.ndarray:
    return np.bincount(np.minimum((scores * bins).astype(np.int64), bins - 1), minlength=bins)


BINARY = ReferenceProfile.fit({"x": np.arange(10.0)}, classes=["neg", "pos"])
MULTICLASS = ReferenceProfile.fit({"x": np.arange(10.0)}, classes=["0", "1", "2", "3"])


def _summary(score: np.ndarray, y: np.ndarray) -> WindowSummary:
    """A labelled binary window: score = P(pos), y = 1 for pos."""
    w = WindowSummary.empty(BINARY)
    w.add_labels(labels=np.where(y == 1, "pos", "neg").tolist(), scores=score)
    return w


def _multiclass_summary(probs: np.ndarray, target: np.ndarray) -> WindowSummary:
    w = WindowSummary.empty(MULTICLASS)
    w.add_labels(labels=[str(t) for t in target], probabilities=probs)
    return w


def _windows_cal_bins(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[windows, 3, CAL_BINS] calibration bins of many windows at once."""
    w = scores.shape[0]
    idx = np.minimum((scores * CAL_BINS).astype(np.int64), CAL_BINS - 1) + CAL_BINS * np.arange(w)[:, None]
    size = w * CAL_BINS
    out = [
        np.bincount(idx.ravel(), minlength=size),
        np.bincount(idx.ravel(), weights=scores.ravel(), minlength=size),
        np.bincount(idx.ravel(), weights=y.ravel().astype(np.float64), minlength=size),
    ]
    return np.stack([a.reshape(w, CAL_BINS) for a in out], axis=1)


def test_ece_and_mce_match_torchmetrics_binary() -> None:
    rng = np.random.default_rng(1)
    p = rng.beta(2, 2, size=20000)
    y = (rng.random(p.size) < p**1.3).astype(int)
    bins = _cal_bins(p, y)
    tp, ty = torch.tensor(p, dtype=torch.float64), torch.tensor(y)
    ref_l1 = binary_calibration_error(tp, ty, n_bins=CAL_BINS, norm="l1").item()
    ref_max = binary_calibration_error(tp, ty, n_bins=CAL_BINS, norm="max").item()
    clf = _summary(p, y).classifier
    for counts in (bins, (clf.cal_count, clf.cal_sum_p, clf.cal_sum_y)):
        assert ece(*counts) == pytest.approx(ref_l1, abs=1e-6)
        assert max_calibration_error(*counts) == pytest.approx(ref_max, abs=1e-6)
    assert ece(*bins) > 0.01


def test_ece_matches_torchmetrics_multiclass() -> None:
    rng = np.random.default_rng(2)
    probs = rng.dirichlet([0.5, 0.5, 0.5, 0.5], size=5000)
    sharper = probs**2 / (probs**2).sum(axis=1, keepdims=True)
    target = (rng.random((5000, 1)) > sharper.cumsum(axis=1)).sum(axis=1)
    ref = multiclass_calibration_error(
        torch.tensor(probs, dtype=torch.float64), torch.tensor(target), num_classes=4, n_bins=CAL_BINS, norm="l1"
    ).item()
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == target).astype(int)
    clf = _multiclass_summary(probs, target).classifier
    assert ece(*_cal_bins(conf, correct)) == pytest.approx(ref, abs=1e-6)
    assert ece(clf.cal_count, clf.cal_sum_p, clf.cal_sum_y) == pytest.approx(ref, abs=1e-6)
    assert ref > 0.05


def test_reliability_rows_match_sklearn_calibration_curve() -> None:
    rng = np.random.default_rng(3)
    p = rng.beta(0.8, 3, size=5000)
    y = (rng.random(p.size) < p).astype(int)
    clf = _summary(p, y).classifier
    rows = reliability_table(clf.cal_count, clf.cal_sum_p, clf.cal_sum_y)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=CAL_BINS, strategy="uniform")
    np.testing.assert_allclose([r.frac_pos for r in rows], prob_true, atol=1e-12)
    np.testing.assert_allclose([r.mean_p for r in rows], prob_pred, atol=1e-12)
    assert sum(r.count for r in rows) == p.size
    assert all(r.lower <= r.mean_p < r.upper for r in rows)


def test_ece_equal_mass_on_raw_scores() -> None:
    rng = np.random.default_rng(4)
    p = rng.beta(2, 5, size=3000)
    y = (rng.random(p.size) < p).astype(int)
    order = np.argsort(p)
    groups = order.reshape(CAL_BINS, -1)
    expected = np.abs(y[groups].sum(axis=1) - p[groups].sum(axis=1)).sum() / p.size
    assert ece_equal_mass(p, y, CAL_BINS) == pytest.approx(expected, abs=1e-12)
    skewed = np.clip(p * 1.5, 0, 1)
    assert ece_equal_mass(skewed, y, CAL_BINS) > ece_equal_mass(p, y, CAL_BINS) + 0.05


def test_ece_equal_mass_from_hist_within_bound() -> None:
    rng = np.random.default_rng(5)
    p = rng.beta(2, 5, size=50000)
    y = (rng.random(p.size) < p**0.8).astype(int)
    pos, neg = _hist(p[y == 1]), _hist(p[y == 0])
    counts = pos + neg
    fine = np.minimum((p * FINE_BINS).astype(np.int64), FINE_BINS - 1)
    group = _mass_groups(counts.astype(np.float64), CAL_BINS)[fine]
    exact = np.abs(np.bincount(group, weights=y) - np.bincount(group, weights=p)).sum() / p.size
    approx = ece_equal_mass_from_hist(pos, neg, CAL_BINS)
    assert abs(approx - exact) <= 1 / (2 * FINE_BINS)
    mass = np.bincount(group, minlength=CAL_BINS)
    assert np.all(np.abs(mass - p.size / CAL_BINS) <= counts.max())
    assert abs(approx - ece_equal_mass(p, y, CAL_BINS)) < 0.01


def test_calibration_hl_is_pearson_chi_squared_on_bin_centres() -> None:
    """Scores at one value per bin, huge calibrated reference: each bin's term is scipy's chisquare."""
    rng = np.random.default_rng(6)
    centres = (np.arange(CAL_BINS) + 0.5) / CAL_BINS
    p = centres[rng.integers(0, CAL_BINS, size=6000)]
    y = (rng.random(p.size) < p * 0.9).astype(int)
    window = _cal_bins(p, y)
    big = np.full(CAL_BINS, 1e15)
    result = calibration_hl(window, (big, big * centres, big * centres))
    count, _, pos = window
    expected = sum(
        stats.chisquare([pos[b], count[b] - pos[b]], [count[b] * c, count[b] * (1 - c)]).statistic
        for b, c in enumerate(centres)
        if min(count[b] * c, count[b] * (1 - c)) >= 5
    )
    assert result.statistic == pytest.approx(expected, rel=1e-6)
    assert result.df == sum(min(count[b] * c, count[b] * (1 - c)) >= 5 for b, c in enumerate(centres))
    assert result.p_value == pytest.approx(stats.chi2.sf(expected, result.df), rel=1e-6)


@pytest.mark.parametrize("power", [1.0, 1.4])
def test_false_alarm_rate_over_a_million_events(power: float) -> None:
    """Stationary data (calibrated, or miscalibrated as p**power in both reference and window)."""
    alpha, alarms, tested, events = 0.01, 0, 0, 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        p = rng.beta(2, 2, size=20000)
        det = CalibrationDrift(_summary(p, (rng.random(p.size) < p**power).astype(int)), alpha=alpha)
        scores = rng.beta(2, 2, size=(250, 400))
        labels = rng.random(scores.shape) < scores**power
        reference = det.reference
        for window in _windows_cal_bins(scores, labels):
            alarms += calibration_hl(tuple(window), reference).p_value < alpha
            tested += 1
        events += scores.size
    assert events >= 1_000_000
    assert alarms / tested <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / tested)


def test_score_shift_of_a_calibrated_model_is_not_calibration_drift() -> None:
    """Scores move within and across bins, labels stay calibrated: the rate holds over references."""
    alarms = 0
    for seed in range(8):
        rng = np.random.default_rng(200 + seed)
        p = rng.beta(2, 2, size=50000)
        det = CalibrationDrift(_summary(p, (rng.random(p.size) < p).astype(int)))
        scores = rng.beta(5, 1.5, size=(100, 2000))
        windows = _windows_cal_bins(scores, rng.random(scores.shape) < scores)
        alarms += sum(calibration_hl(tuple(w), det.reference).p_value < 0.01 for w in windows)
    assert alarms / 800 <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / 800)


def _overconfident(p: np.ndarray, k: float = 2.0) -> np.ndarray:
    logit = np.log(p / (1 - p))
    return 1 / (1 + np.exp(-k * logit))


def test_overconfidence_breaches_while_accuracy_is_flat() -> None:
    rng = np.random.default_rng(8)
    p = rng.beta(2, 2, size=20000)
    det = CalibrationDrift(_summary(p, (rng.random(p.size) < p).astype(int)))
    pw = rng.beta(2, 2, size=2000)
    yw = (rng.random(pw.size) < pw).astype(int)
    sharp = _overconfident(pw)
    assert np.array_equal(sharp >= 0.5, pw >= 0.5)
    honest = {f.metric: f for f in det.update(_summary(pw, yw))}
    assert not honest["calibration_hl"].breached
    found = {f.metric: f for f in det.update(_summary(sharp, yw))}
    assert det.drift_detected and found["calibration_hl"].breached and found["calibration_hl"].p_value < 1e-6
    assert found["ece"].value > honest["ece"].value and found["ece_equal_mass"].value > honest["ece_equal_mass"].value
    assert set(found) == {"calibration_hl", "ece", "ece_equal_mass", "brier"}


def test_overconfidence_breaches_multiclass() -> None:
    rng = np.random.default_rng(9)

    def draw(n: int, temperature: float) -> WindowSummary:
        logits = rng.normal(0, 1.5, size=(n, 4))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        target = (rng.random((n, 1)) > probs.cumsum(axis=1)).sum(axis=1)
        shown = np.exp(logits / temperature) / np.exp(logits / temperature).sum(axis=1, keepdims=True)
        return _multiclass_summary(shown, target)

    det = CalibrationDrift(draw(20000, 1.0))
    det = CalibrationDrift.from_state(json.loads(json.dumps(det.state_dict(), allow_nan=False)))
    assert not any(f.breached for f in det.update(draw(3000, 1.0)))
    found = {f.metric: f for f in det.update(draw(3000, 0.6))}
    assert found["calibration_hl"].breached
    assert set(found) == {"calibration_hl", "ece", "brier"}


def test_minimum_labels_and_state_round_trip() -> None:
    rng = np.random.default_rng(10)
    p = rng.beta(2, 2, size=20000)
    det = CalibrationDrift(_summary(p, (rng.random(p.size) < p).astype(int)), alpha=0.05)
    few = _overconfident(rng.beta(2, 2, size=100))
    small = det.update(_summary(few, (rng.random(100) < few).astype(int)))
    assert "calibration_hl" not in {f.metric for f in small} and not det.drift_detected
    window = _summary(_overconfident(p[:3000]), (rng.random(3000) < p[:3000]).astype(int))
    clone = CalibrationDrift.from_state(json.loads(json.dumps(det.state_dict(), allow_nan=False)))
    assert clone.update(window) == det.update(window)
    assert clone.drift_detected
