"""The labelled performance detector: tests that a window's accuracy, F1, ROC AUC or RMSE dropped against the
reference's, from the mergeable counts of both summaries.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np

from driftline.detectors.drop_tests import normal_drop_pvalue, proportion_drop_pvalue
from driftline.detectors.findings import Finding
from driftline.detectors.performance_metrics import (
    f1_macro,
    f1_macro_variance,
    f1_weighted,
    hanley_mcneil_se,
    mean_loss,
    mse_variance,
    precision_recall_f1,
    roc_auc_from_hist,
)


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
