"""Accuracy per traffic slice (attribute = value, and attribute pairs), tested with false-discovery control.

A model can hold its overall accuracy while failing one segment (a region, a device, or only the
combination of two). Testing every slice separately would drown the one real finding in chance alarms,
so p-values are adjusted with Benjamini-Hochberg across all slices of a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any, Literal, NamedTuple, Self

import numpy as np

from driftline.detectors.drift import benjamini_hochberg
from driftline.detectors.drop_tests import proportion_drop_pvalue
from driftline.detectors.findings import Finding

SliceKey = tuple[tuple[str, str], ...]


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; unlike the Wald interval it stays inside [0, 1]
    and keeps its coverage for small slices and accuracies near 1.

    >>> [round(x, 4) for x in wilson_interval(90, 100)]
    [0.8256, 0.9448]
    """
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    centre = (successes + z * z / 2) / (n + z * z)
    half = z * math.sqrt(successes * (n - successes) / n + z * z / 4) / (n + z * z)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def slice_name(key: SliceKey) -> str:
    """The `Finding.slice` text of a slice key.

    >>> slice_name((("device", "tablet"), ("region", "eu")))
    'device=tablet&region=eu'
    """
    return "&".join(f"{attr}={value}" for attr, value in key)


class SliceTest(NamedTuple):
    """One slice's verdict: its accuracy and Wilson bounds, the baseline it was tested against, p and q."""

    key: SliceKey
    labeled: int
    accuracy: float
    lower: float
    upper: float
    baseline: float
    p_value: float
    q_value: float


def compare_slices(
    slices: Mapping[SliceKey, tuple[int, int]],
    baselines: Mapping[SliceKey, tuple[int, int]],
    *,
    margin: float = 0.0,
    min_support: int = 100,
    level: float = 0.95,
) -> list[SliceTest]:
    """Test every slice (labeled, correct) against its baseline (labeled, correct), with BH q-values.

    A slice is tested when it and its baseline both have ``min_support`` labels. H0: slice accuracy >=
    baseline accuracy - margin (one-sided Farrington-Manning test, see `proportion_drop_pvalue`).

    >>> [t.q_value < 0.05 for t in compare_slices({(("r", "eu"),): (200, 140), (("r", "us"),): (200, 185)},
    ...                                        {(("r", "eu"),): (800, 730), (("r", "us"),): (800, 685)})]
    [True, False]
    """
    keys = [
        k for k, (n, _) in slices.items() if n >= min_support and k in baselines and baselines[k][0] >= min_support
    ]
    p = [proportion_drop_pvalue(baselines[k][1], baselines[k][0], slices[k][1], slices[k][0], margin) for k in keys]
    q = benjamini_hochberg(p)
    results = []
    for key, p_value, q_value in zip(keys, p, q, strict=True):
        (n, correct), (bn, bc) = slices[key], baselines[key]
        lower, upper = wilson_interval(correct, n, level)
        results.append(SliceTest(key, n, correct / n, lower, upper, bc / bn, p_value, float(q_value)))
    return results


class SliceAccuracy:
    """Flags slices whose accuracy is credibly below the rest of the traffic (or their reference accuracy).

    For classifiers, every slice of the window (``summary.slices``: attributes and attribute pairs) with
    ``min_support`` labels is tested one-sided against ``baseline``: "rest" = the window's other labelled
    traffic (overall from the classifier's confusion matrix minus the slice), or "reference" = the same
    slice in the reference summary. False alarms: Benjamini-Hochberg across all slices tested in the window, a slice
    breaches when its q-value <= ``fdr``; so on stationary traffic a window has a false discovery with
    probability <= ``fdr``. Findings: one ``slice_accuracy`` per tested slice and ``worst_slice`` for the
    ``k_worst`` slices with the lowest Wilson lower bound, ranked, with effects and q-values. A
    ``worst_slice`` is keyed by its rank (``feature`` = ``#1``, ``#2``, ...; the slice in ``detail["slice"]``),
    so a window re-judged as labels land keeps exactly ``k_worst`` of them, whichever slices they are.

    >>> import numpy as np
    >>> from driftline.detectors.summaries import ReferenceProfile, WindowSummary
    >>> profile = ReferenceProfile.fit({"x": np.arange(10.0)}, classes=["no", "yes"])
    >>> rng = np.random.default_rng(0)
    >>> region = rng.choice(["eu", "us"], size=4000)
    >>> right = rng.random(4000) < np.where(region == "eu", 0.7, 0.9)
    >>> w = WindowSummary.empty(profile)
    >>> w.add_labels(labels=np.where(right, "yes", "no").tolist(), predicted=["yes"] * 4000,
    ...              segments={"region": region.tolist()})
    >>> [(f.metric, f.feature, f.slice or f.detail["slice"], f.breached) for f in SliceAccuracy().update(w)]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('slice_accuracy', '', 'region=eu', True), ('slice_accuracy', '', 'region=us', False),
     ('worst_slice', '#1', 'region=eu', True), ('worst_slice', '#2', 'region=us', False)]
    """

    def __init__(
        self,
        reference: Any = None,
        *,
        baseline: Literal["rest", "reference"] = "rest",
        fdr: float = 0.05,
        margin: float = 0.0,
        min_support: int = 100,
        k_worst: int = 5,
        level: float = 0.95,
    ) -> None:
        if baseline == "reference" and reference is None:
            raise ValueError("baseline='reference' needs a reference summary")
        self.reference: dict[SliceKey, tuple[int, int]] = (
            {k: (int(c.labeled), int(c.correct)) for k, c in reference.slices.items() if c.labeled}
            if reference is not None else {}
        )
        if baseline == "reference" and not self.reference:
            raise ValueError("baseline='reference' needs a reference with ground-truth labels on segmented rows")
        self.baseline, self.fdr, self.margin = baseline, fdr, margin
        self.min_support, self.k_worst, self.level = min_support, k_worst, level
        self.drift_detected = False

    def _baselines(self, summary: Any, slices: Mapping[SliceKey, tuple[int, int]]) -> dict[SliceKey, tuple[int, int]]:
        if self.baseline == "reference":
            return self.reference
        confusion = np.asarray(summary.classifier.confusion)
        total, correct = int(confusion.sum()), int(np.trace(confusion))
        return {k: (total - n, correct - c) for k, (n, c) in slices.items()}

    def update(self, summary: Any) -> list[Finding]:
        """Test all slices of one window; return their findings and the worst ones."""
        self.drift_detected = False
        if summary.classifier is None:
            return []
        slices = {k: (int(c.labeled), int(c.correct)) for k, c in summary.slices.items()}
        results = compare_slices(
            slices, self._baselines(summary, slices), margin=self.margin, min_support=self.min_support, level=self.level
        )
        findings = [self._finding("slice_accuracy", t) for t in results]
        worst = sorted(results, key=lambda t: (t.lower, t.accuracy - t.baseline))[: self.k_worst]
        findings += [self._finding("worst_slice", t, rank) for rank, t in enumerate(worst, start=1)]
        self.drift_detected = any(f.breached for f in findings)
        return findings

    def _finding(self, metric: str, t: SliceTest, rank: int | None = None) -> Finding:
        detail = {
            "q_value": t.q_value,
            "wilson_lower": t.lower,
            "wilson_upper": t.upper,
            "baseline_accuracy": t.baseline,
            "effect": t.baseline - t.accuracy,
            "labeled": t.labeled,
            "fdr": self.fdr,
        }
        if rank is not None:
            detail.update(rank=rank, slice=slice_name(t.key))
        return Finding(
            metric=metric,
            value=t.accuracy,
            threshold=t.baseline - self.margin,
            breached=t.q_value <= self.fdr,
            feature="" if rank is None else f"#{rank}",
            slice=slice_name(t.key) if rank is None else "",
            p_value=t.p_value,
            detail=detail,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "reference": [[[list(pair) for pair in k], n, c] for k, (n, c) in self.reference.items()],
            "baseline": self.baseline,
            "fdr": self.fdr,
            "margin": self.margin,
            "min_support": self.min_support,
            "k_worst": self.k_worst,
            "level": self.level,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        det = cls.__new__(cls)
        det.reference = {tuple((a, v) for a, v in key): (n, c) for key, n, c in state["reference"]}
        det.baseline, det.fdr, det.margin = state["baseline"], state["fdr"], state["margin"]
        det.min_support, det.k_worst, det.level = state["min_support"], state["k_worst"], state["level"]
        det.drift_detected = False
        return det
