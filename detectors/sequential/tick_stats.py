"""One tick in plain numbers (`TickStats`) and what in-control looks like (`TickReference`).

Both read a `WindowSummary` (a tick's, the reference data's) down to the per-stream counts and means the
tick-level detectors standardise: every numeric feature, the model score, the error rate, and the share of
each frequent category of a categorical (or boolean) feature, a proportion stream named ``feature=category``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from driftline.detectors.summaries import WindowSummary


class Moments(NamedTuple):
    """A stream's count and mean in one tick (a NumericSummary has both, with more)."""

    count: float
    mean: float


def hist_moments(hist: ArrayLike) -> tuple[float, float, float]:
    """count, mean and m2 of a [0, 1] histogram's bin midpoints (the binned score, exact for it)."""
    h = np.asarray(hist, dtype=np.float64)
    mid = (np.arange(h.size) + 0.5) / h.size
    count = float(h.sum())
    mean = float(h @ mid / count) if count else 0.0
    return count, mean, float(h @ (mid - mean) ** 2)


def _score_moments(summary: WindowSummary) -> tuple[float, float, float] | None:
    if summary.classifier is not None:
        return hist_moments(summary.classifier.score_hist)
    if summary.regression is not None:
        p = summary.regression.prediction
        return float(p.count), float(p.mean), float(p.m2)
    return None


def _errors(summary: WindowSummary) -> tuple[int, int]:
    c = summary.classifier
    if c is None or c.labeled == 0:
        return 0, 0
    confusion = np.asarray(c.confusion)
    labeled = int(confusion.sum())
    return labeled, labeled - int(np.trace(confusion))


@dataclass(frozen=True, slots=True)
class TickStats:
    """One tick in plain numbers: per-stream (count, mean), and the labelled outcome counts.

    Parameters
    ----------
    numeric
        Per numeric feature, its (count, mean) in the tick.
    score
        (count, mean) of the binned classifier score (midpoints of `score_hist`) or of the regression
        prediction; None without a score.
    labeled
        How many of the tick's events got a label.
    errors
        How many of those were mispredicted.
    proportions
        Per ``feature=category`` stream, (valid values of the feature, share of the category among them).

    Examples
    --------
    >>> TickStats({"age": Moments(100, 41.5)}, labeled=20, errors=3).errors
    3
    """

    numeric: Mapping[str, Moments] = field(default_factory=dict)
    score: Moments | None = None
    labeled: int = 0
    errors: int = 0
    proportions: Mapping[str, Moments] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: WindowSummary) -> TickStats:
        """Read the `WindowSummary` of one tick."""
        numeric = {name: Moments(float(s.count), float(s.mean)) for name, s in summary.numeric.items()}
        score = _score_moments(summary)
        labeled, errors = _errors(summary)
        proportions = {}
        for name, cs in summary.categorical.items():
            valid = cs.valid
            for category, count in zip(cs.categories, cs.counts.tolist(), strict=True):
                proportions[proportion_stream(name, category)] = Moments(float(valid), count / valid if valid else 0.0)
        return cls(numeric, None if score is None else Moments(score[0], score[1]), labeled, errors, proportions)


SCORE, ERROR_RATE = "score", "error_rate"
MAX_PROPORTIONS = 5
"""Proportion streams watched per categorical feature: its most frequent reference categories."""
MIN_SHARE = 0.01
"""A category rarer than this in the reference is not watched: its tick counts are too small to standardise."""


def proportion_stream(feature: str, category: str) -> str:
    """The stream name of one category's share of a categorical feature.

    >>> proportion_stream("region", "north")
    'region=north'
    """
    return f"{feature}={category}"


@dataclass(frozen=True, slots=True)
class TickReference:
    """What in-control looks like: (mean, sd) per numeric feature and of the score, and the error rate.

    Estimated from reference data far larger than a tick: an error e in the reference mean biases every
    tick's z by e * sqrt(tick count) / sd, the same offset in every tick, which the CUSUM accumulates. So
    `counts` (the reference's events per stream) bounds how many events a tick's z may weigh (see
    `TickChangeDetector`).

    Parameters
    ----------
    numeric
        Per numeric feature, its (mean, sd); no feature may be named "score" or "error_rate".
    score
        (mean, sd) of the score, as `TickStats.score` reads it.
    error_rate
        The in-control error rate p0 (its sd is sqrt(p0 (1 - p0))).
    proportions
        Per ``feature=category`` stream, the category's in-control share p among the feature's valid values
        (a Bernoulli stream like the error rate: sd sqrt(p (1 - p))).
    counts
        Per stream, the reference events its mean and sd come from; a stream not listed counts as exact.

    Examples
    --------
    >>> TickReference({"age": (40.0, 12.0)}, error_rate=0.5).streams()
    [('age', 40.0, 12.0), ('error_rate', 0.5, 0.5)]
    """

    numeric: Mapping[str, tuple[float, float]]
    score: tuple[float, float] | None = None
    error_rate: float | None = None
    proportions: Mapping[str, float] = field(default_factory=dict)
    counts: Mapping[str, float] = field(default_factory=dict)

    def count(self, stream: str) -> float:
        """The reference events behind a stream's mean (infinite when not known)."""
        return float(self.counts.get(stream, math.inf))

    def streams(self) -> list[tuple[str, float, float]]:
        """(name, mean, sd) of every stream that can be standardised (finite mean, sd > 0)."""
        if SCORE in self.numeric or ERROR_RATE in self.numeric:
            raise ValueError(f"numeric features may not be named {SCORE!r} or {ERROR_RATE!r}")
        out = [(name, float(m), float(s)) for name, (m, s) in self.numeric.items()]
        if self.score is not None:
            out.append((SCORE, float(self.score[0]), float(self.score[1])))
        if self.error_rate is not None:
            p = float(self.error_rate)
            out.append((ERROR_RATE, p, math.sqrt(p * (1 - p))))
        out += [(name, float(p), math.sqrt(p * (1 - p))) for name, p in sorted(self.proportions.items())]
        return [(n, m, s) for n, m, s in out if math.isfinite(m) and math.isfinite(s) and s > 0]

    def is_bernoulli(self, stream: str) -> bool:
        """Whether the stream is a rate of 0/1 outcomes (the error rate, a category's share)."""
        return stream == ERROR_RATE or stream in self.proportions

    @classmethod
    def from_summary(cls, summary: WindowSummary) -> TickReference:
        """From the reference data's `WindowSummary` (sd with the n - 1 divisor)."""
        numeric = {
            name: (float(s.mean), math.sqrt(s.m2 / (s.count - 1))) for name, s in summary.numeric.items() if s.count > 1
        }
        counts = {name: float(s.count) for name, s in summary.numeric.items() if s.count > 1}
        moments = _score_moments(summary)
        score = None if moments is None or moments[0] < 2 else (moments[1], math.sqrt(moments[2] / (moments[0] - 1)))
        if score is not None and moments is not None:
            counts[SCORE] = moments[0]
        labeled, errors = _errors(summary)
        if labeled:
            counts[ERROR_RATE] = float(labeled)
        proportions = {}
        for name, cs in summary.categorical.items():
            valid = cs.valid
            if valid < 2:
                continue
            shares = sorted(((count / valid, category) for category, count in zip(cs.categories, cs.counts.tolist(),
                                                                                  strict=True)), reverse=True)
            watched = [(p, c) for p, c in shares if MIN_SHARE <= p <= 1 - MIN_SHARE][:MAX_PROPORTIONS]
            if len(cs.categories) == 2 and cs.other == 0:
                watched = watched[:1]  # a two-valued feature (a boolean): the other share is its mirror image
            proportions.update({proportion_stream(name, c): p for p, c in watched})
            counts.update({proportion_stream(name, c): float(valid) for _, c in watched})
        return cls(numeric, score, errors / labeled if labeled else None, proportions, counts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "numeric": {name: list(v) for name, v in self.numeric.items()},
            "score": None if self.score is None else list(self.score),
            "error_rate": self.error_rate,
            "proportions": dict(self.proportions),
            "counts": dict(self.counts),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TickReference:
        score = d["score"]
        numeric = {name: (float(v[0]), float(v[1])) for name, v in d["numeric"].items()}
        proportions = {str(name): float(p) for name, p in d.get("proportions", {}).items()}
        counts = {str(name): float(n) for name, n in d.get("counts", {}).items()}
        return cls(numeric, None if score is None else (float(score[0]), float(score[1])), d["error_rate"],
                   proportions, counts)
