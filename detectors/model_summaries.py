"""Mergeable summaries of model outputs: classifier scores and labels, regression predictions and errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from driftline.detectors.binning import unit_bin_index
from driftline.detectors.codec import ArrayTable, dec_float, enc_float
from driftline.detectors.feature_summaries import NumericSummary

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

_EPS = float(np.finfo(np.float64).eps)
_NONE, _UNKNOWN = -2, -1


@lru_cache(maxsize=256)
def _class_codes(classes: tuple[str, ...]) -> dict[Any, int]:
    codes: dict[Any, int] = {c: i for i, c in enumerate(classes)}
    codes[None] = _NONE
    return codes


def class_codes(classes: tuple[str, ...], labels: Sequence[Any]) -> IntArray:
    """Index of each label in `classes`; -2 for None, -1 for a label that is not a class."""
    get = _class_codes(classes).get
    return np.array([get(v if v is None else str(v), _UNKNOWN) for v in labels], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class _Outputs:
    """One batch's classifier outputs resolved to per-row arrays (NaN / -2 where absent)."""

    pred: IntArray
    score: FloatArray
    confidence: FloatArray
    probs: FloatArray | None


@dataclass(eq=False, slots=True)
class ClassifierSummary:
    """Prediction and label statistics of a classifier: enough for drift, CBPE, performance and calibration.

    score = P(classes[1]) for binary, the largest class probability for multiclass. `expected_correct`
    sums the model's probability of its own predicted label (max(p, 1-p) / max prob when the prediction is
    the most probable class) over the `scored` predictions; `score_hist` counts the same predictions.
    Calibration bins hold binary (P(positive), positive?) and multiclass (P(predicted), correct?) pairs.
    `logloss_sum` and `brier_sum` (sklearn's definitions; multiclass Brier sums over classes) cover the
    `prob_labeled` labelled predictions that came with probabilities. Labels or predictions that are not
    one of `classes` are counted in `label_unknown` / `pred_unknown`, never guessed. Bins are
    min(floor(s * bins), bins - 1) on [0, 1].

    >>> s = ClassifierSummary.empty(("no", "yes"))
    >>> s.add_predictions(None, np.array([0.9, 0.2, 0.6]), None, 3)
    >>> s.pred_counts.tolist(), round(s.expected_correct, 3), s.scored
    ([1, 2], 2.3, 3)
    >>> _ = s.add_labels(["yes", "no", "no"], None, np.array([0.9, 0.2, 0.6]), None, 3)
    >>> s.confusion.tolist(), s.labeled
    ([[1, 1], [0, 1]], 3)
    """

    classes: tuple[str, ...]
    pred_counts: IntArray
    score_hist: IntArray
    confusion: IntArray
    cal_count: IntArray
    cal_sum_p: FloatArray
    cal_sum_y: IntArray
    hist_pos: IntArray
    hist_neg: IntArray
    score_bins: int = 100
    cal_bins: int = 15
    expected_correct: float = 0.0
    scored: int = 0
    pred_unknown: int = 0
    labeled: int = 0
    label_unknown: int = 0
    prob_labeled: int = 0
    logloss_sum: float = 0.0
    brier_sum: float = 0.0

    @classmethod
    def empty(cls, classes: Sequence[str], score_bins: int = 100, cal_bins: int = 15) -> ClassifierSummary:
        k = len(classes)
        z = np.zeros
        return cls(tuple(classes), z(k, np.int64), z(score_bins, np.int64), z((k, k), np.int64),
                   z(cal_bins, np.int64), z(cal_bins, np.float64), z(cal_bins, np.int64),
                   z(score_bins, np.int64), z(score_bins, np.int64), score_bins, cal_bins)

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    def _outputs(
        self, predicted: Sequence[str | None] | None, scores: ArrayLike | None, probabilities: ArrayLike | None,
        n: int,
    ) -> _Outputs:
        k = len(self.classes)
        pred = class_codes(self.classes, predicted) if predicted is not None else np.full(n, _NONE, np.int64)
        probs = None
        if probabilities is not None:
            probs = np.asarray(probabilities, dtype=np.float64)
            if probs.shape != (n, k):
                raise ValueError(f"probabilities must have shape ({n}, {k}), got {probs.shape}")
        if scores is not None:
            score = np.asarray(scores, dtype=np.float64).reshape(-1)
        elif probs is not None:
            score = probs[:, 1].copy() if self.binary else probs.max(axis=1)
        else:
            score = np.full(n, np.nan)
        if score.size != n:
            raise ValueError(f"scores has {score.size} rows, expected {n}")
        known = np.isfinite(score) if probs is None else np.isfinite(score) & np.isfinite(probs).all(axis=1)
        fill = (pred == _NONE) & known
        if self.binary:
            pred[fill] = (score[fill] >= 0.5).astype(np.int64)
            confidence = np.where(pred == 1, score, np.where(pred == 0, 1.0 - score, np.maximum(score, 1 - score)))
        elif probs is not None:
            pred[fill] = np.argmax(probs[fill], axis=1)
            rows = np.arange(n)
            confidence = np.where(pred >= 0, probs[rows, np.maximum(pred, 0)], score)
        else:
            confidence = score
        confidence = np.where(known, confidence, np.nan)
        return _Outputs(pred, np.where(known, score, np.nan), confidence, probs)

    def add_predictions(
        self, predicted: Sequence[str | None] | None, scores: ArrayLike | None, probabilities: ArrayLike | None,
        n: int,
    ) -> None:
        """Predicted labels (derived from scores when absent) and the confidence-based statistics."""
        out = self._outputs(predicted, scores, probabilities, n)
        self.pred_counts += np.bincount(out.pred[out.pred >= 0], minlength=len(self.classes))
        self.pred_unknown += int(np.count_nonzero(out.pred == _UNKNOWN))
        ok = np.isfinite(out.score)
        self.score_hist += np.bincount(unit_bin_index(out.score[ok], self.score_bins), minlength=self.score_bins)
        self.scored += int(np.count_nonzero(ok))
        self.expected_correct += float(out.confidence[ok].sum())

    def add_labels(
        self, labels: Sequence[str | None], predicted: Sequence[str | None] | None, scores: ArrayLike | None,
        probabilities: ArrayLike | None, n: int,
    ) -> tuple[BoolArray, BoolArray]:
        """Labelled predictions; returns (rows counted as labelled, rows predicted correctly) for slices."""
        k = len(self.classes)
        y = class_codes(self.classes, labels)
        out = self._outputs(predicted, scores, probabilities, n)
        given = y != _NONE
        ok = given & (y >= 0) & (out.pred >= 0)
        self.label_unknown += int(np.count_nonzero(given & ~ok))
        self.labeled += int(np.count_nonzero(ok))
        self.confusion += np.bincount(y[ok] * k + out.pred[ok], minlength=k * k).reshape(k, k)
        correct = ok & (y == out.pred)
        scored = ok & np.isfinite(out.score)
        if self.binary:
            s, positive = out.score[scored], y[scored] == 1
            self._calibrate(s, positive)
            self.hist_pos += np.bincount(unit_bin_index(s[positive], self.score_bins), minlength=self.score_bins)
            self.hist_neg += np.bincount(unit_bin_index(s[~positive], self.score_bins), minlength=self.score_bins)
            p_true = np.clip(np.where(positive, s, 1.0 - s), _EPS, 1 - _EPS)
            self.logloss_sum += float(-np.log(p_true).sum())
            self.brier_sum += float(((s - positive) ** 2).sum())
            self.prob_labeled += int(s.size)
        else:
            self._calibrate(out.confidence[scored], correct[scored])
            if out.probs is not None:
                p, t = out.probs[scored], y[scored]
                self.logloss_sum += float(-np.log(np.clip(p[np.arange(t.size), t], _EPS, 1 - _EPS)).sum())
                onehot = np.zeros_like(p)
                onehot[np.arange(t.size), t] = 1.0
                self.brier_sum += float(((p - onehot) ** 2).sum())
                self.prob_labeled += int(t.size)
        return ok, correct

    def _calibrate(self, p: FloatArray, hit: BoolArray) -> None:
        idx = unit_bin_index(p, self.cal_bins)
        self.cal_count += np.bincount(idx, minlength=self.cal_bins)
        self.cal_sum_p += np.bincount(idx, weights=p, minlength=self.cal_bins)
        self.cal_sum_y += np.bincount(idx[hit], minlength=self.cal_bins)

    _ARRAYS = ("pred_counts", "score_hist", "confusion", "cal_count", "cal_sum_p", "cal_sum_y", "hist_pos",
               "hist_neg")
    _INTS = ("score_bins", "cal_bins", "scored", "pred_unknown", "labeled", "label_unknown", "prob_labeled")
    _FLOATS = ("expected_correct", "logloss_sum", "brier_sum")

    def merge(self, other: ClassifierSummary) -> ClassifierSummary:
        if (self.classes, self.score_bins, self.cal_bins) != (other.classes, other.score_bins, other.cal_bins):
            raise ValueError("cannot merge classifier summaries with different classes or bins")
        merged = {name: getattr(self, name) + getattr(other, name) for name in self._ARRAYS + self._FLOATS}
        merged.update({name: getattr(self, name) + getattr(other, name) for name in self._INTS[2:]})
        return ClassifierSummary(classes=self.classes, score_bins=self.score_bins, cal_bins=self.cal_bins, **merged)

    def encode(self, table: ArrayTable) -> dict[str, Any]:
        d: dict[str, Any] = {"classes": list(self.classes)}
        d.update({name: table.put(getattr(self, name)) for name in self._ARRAYS})
        d.update({name: getattr(self, name) for name in self._INTS})
        d.update({name: enc_float(getattr(self, name)) for name in self._FLOATS})
        return d

    @classmethod
    def decode(cls, d: dict[str, Any], table: ArrayTable) -> ClassifierSummary:
        classes = tuple(str(c) for c in d["classes"])
        k = len(classes)
        s = cls.empty(classes, int(d["score_bins"]), int(d["cal_bins"]))
        for name in cls._ARRAYS:
            ref = getattr(s, name)
            arr = table.get(d[name], ref.dtype.type, ref.ndim)
            if arr.shape != ref.shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {ref.shape} for {k} classes")
            setattr(s, name, arr)
        for name in cls._INTS[2:]:
            setattr(s, name, int(d[name]))
        for name in cls._FLOATS:
            setattr(s, name, dec_float(d[name]))
        return s


@dataclass(eq=False, slots=True)
class RegressionSummary:
    """Regression outputs (`prediction`, for output drift) and labelled errors, err = prediction - truth.

    `target` summarises the labelled true values on the prediction edges (label drift, and the total sum
    of squares for R^2 = 1 - sum_sq_err / target.m2). Labelled rows without a finite prediction value
    are counted in `label_unknown`; non-finite predictions count as missing.

    >>> import numpy as np
    >>> s = RegressionSummary.empty(np.array([0.0, 10.0]))
    >>> s.add_predictions(np.array([1.0, 2.0, np.nan]))
    >>> _ = s.add_labels(np.array([1.0, 2.0]), np.array([2.0, 0.0]))
    >>> s.prediction.count, s.labeled, s.sum_err, s.sum_abs_err, s.sum_sq_err
    (2, 2, 1.0, 3.0, 5.0)
    """

    prediction: NumericSummary
    target: NumericSummary
    labeled: int = 0
    label_unknown: int = 0
    sum_err: float = 0.0
    sum_abs_err: float = 0.0
    sum_sq_err: float = 0.0

    @classmethod
    def empty(cls, edges: ArrayLike) -> RegressionSummary:
        return cls(NumericSummary.empty(edges), NumericSummary.empty(edges))

    def add_predictions(self, values: ArrayLike) -> None:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        self.prediction.add(np.where(np.isinf(v), np.nan, v))

    def add_labels(self, values: ArrayLike, true_values: ArrayLike) -> tuple[BoolArray, FloatArray]:
        """Labelled predictions; returns (rows counted as labelled, their errors) for slices."""
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        t = np.asarray(true_values, dtype=np.float64).reshape(-1)
        if v.size != t.size:
            raise ValueError("values and true_values differ in length")
        given = np.isfinite(t)
        ok = given & np.isfinite(v)
        self.label_unknown += int(np.count_nonzero(given & ~ok))
        err = v[ok] - t[ok]
        self.labeled += int(err.size)
        self.sum_err += float(err.sum())
        self.sum_abs_err += float(np.abs(err).sum())
        self.sum_sq_err += float(err @ err)
        self.target.add(t[ok])
        return ok, np.where(ok, v - t, 0.0)

    def merge(self, other: RegressionSummary) -> RegressionSummary:
        return RegressionSummary(
            self.prediction.merge(other.prediction), self.target.merge(other.target),
            self.labeled + other.labeled, self.label_unknown + other.label_unknown,
            self.sum_err + other.sum_err, self.sum_abs_err + other.sum_abs_err, self.sum_sq_err + other.sum_sq_err,
        )

    def encode(self, table: ArrayTable) -> dict[str, Any]:
        return {
            "prediction": self.prediction.encode(table),
            "target": self.target.encode(table),
            "labeled": self.labeled,
            "label_unknown": self.label_unknown,
            "sum_err": enc_float(self.sum_err),
            "sum_abs_err": enc_float(self.sum_abs_err),
            "sum_sq_err": enc_float(self.sum_sq_err),
        }

    @classmethod
    def decode(cls, d: dict[str, Any], table: ArrayTable) -> RegressionSummary:
        return cls(
            NumericSummary.decode(d["prediction"], table), NumericSummary.decode(d["target"], table),
            int(d["labeled"]), int(d["label_unknown"]), dec_float(d["sum_err"]), dec_float(d["sum_abs_err"]),
            dec_float(d["sum_sq_err"]),
        )
