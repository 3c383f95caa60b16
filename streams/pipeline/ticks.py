"""Ticks: the short event-time sub-windows the sequential detectors read, summarised and merged.

A tick is a tumbling window of ``tick_seconds`` per model version that closes on its own watermark rule
(`WindowSpec.closed_by` with the model's ``tick_lateness_seconds``, at most the window's allowed lateness),
so the merge stage sees it seconds after its end instead of at the window's close. What a tick keeps is
only what `detectors.sequential.TickStats` standardises: per numeric feature its count and sum, the binned
classifier score (the reference's score is binned the same way, so the two means agree exactly) or the
regression prediction's count and sum, and per categorical feature the counts of the reference's
categories among its valid values. A model version without a reference (discovery mode) or with the
sequential detectors disabled has no ticks.

A record late for its tick (its tick closed on the partition) is not added to any tick: it still counts in
its window, whose lateness is longer. `TickSummarizer` is the summarize stage's fold (the `Summarizer` of
``streams.stages.summarize_stage``); `TickSummary` is the mergeable body that travels on the summaries topic.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson

from driftline.detectors.binning import unit_bin_index
from driftline.detectors.reference import ReferenceProfile
from driftline.detectors.sequential import Moments, TickStats, hist_moments, proportion_stream
from driftline.streams.config.model_config import ResolvedModelConfig
from driftline.streams.pipeline.decode import Prediction, column
from driftline.streams.pipeline.summarize import DEFAULTS, DISCOVERY, FeatureColumns, feature_columns
from driftline.streams.pipeline.windows import SpecOf, WindowSpec


def tick_size_seconds(config: ResolvedModelConfig) -> int:
    """The tick a model version runs: the largest divisor of its window not above ``tick_seconds``.

    Ticks then tile every window, so each tick lies in one window and closes no later than it: a window's
    judged sequential rows hold the same ticks however fast the merge stage reads (a 5 s tick across 2 s
    windows fell into whichever window was still open when it closed). 60 s windows keep the default 5 s.

    >>> from driftline.streams.config.model_config import MonitoringConfig
    >>> [tick_size_seconds(MonitoringConfig.from_dict({"defaults": {"window_seconds": w}}).resolve("m", "1"))
    ...  for w in (60, 2, 7, 90)]
    [5, 2, 1, 5]
    """
    window = config.window_seconds
    if window is None:
        return config.tick_seconds
    return max(d for d in range(1, min(config.tick_seconds, window) + 1) if window % d == 0)


def tick_spec_ms(config: ResolvedModelConfig) -> tuple[int, int]:
    """(tick size, tick lateness) in ms of a model version: the one rule the summarize and merge stages use.

    The size is `tick_size_seconds`; the lateness is at most the window's, so every tick of a window closes no
    later than the window.
    """
    lateness = config.tick_lateness_seconds
    if config.allowed_lateness_seconds is not None:
        lateness = min(lateness, config.allowed_lateness_seconds)
    return tick_size_seconds(config) * 1000, int(lateness * 1000)


@dataclass(slots=True)
class TickSummary:
    """One tick of one model version on one input partition (or merged over partitions).

    ``active`` is False for a model version whose ticks are not watched: nothing is added or emitted.

    >>> t = TickSummary("h", True, score_bins=4, categories={"c": ("a", "b")})
    >>> t.numeric["x"] = [2.0, 3.0]
    >>> t.categorical["c"] = [3, 2, 0]
    >>> t.n = 3
    >>> TickSummary.from_bytes(t.to_bytes()).merge(t).numeric["x"]
    [4.0, 6.0]
    """

    profile_hash: str
    active: bool
    n: int = 0
    numeric: dict[str, list[float]] = field(default_factory=dict)  # name -> [count, sum]
    score_bins: int = 0
    score_hist: list[int] = field(default_factory=list)
    prediction: list[float] = field(default_factory=lambda: [0.0, 0.0])  # regression: [count, sum]
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    categorical: dict[str, list[int]] = field(default_factory=dict)  # name -> [valid, count per category...]

    def to_bytes(self) -> bytes:
        return orjson.dumps({"profile_hash": self.profile_hash, "n": self.n, "numeric": self.numeric,
                             "score_bins": self.score_bins, "score_hist": self.score_hist,
                             "prediction": self.prediction, "categories": self.categories,
                             "categorical": self.categorical})

    @classmethod
    def from_bytes(cls, raw: bytes) -> TickSummary:
        """Parse a tick body; ``ValueError`` (or ``TypeError``/``KeyError``) on a malformed one."""
        d = orjson.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("tick summary is not a JSON object")
        numeric = {str(k): [float(v[0]), float(v[1])] for k, v in d["numeric"].items()}
        categories = {str(k): tuple(map(str, v)) for k, v in d["categories"].items()}
        categorical = {str(k): [int(x) for x in v] for k, v in d["categorical"].items()}
        for name, counts in categorical.items():
            if len(counts) != len(categories.get(name, ())) + 1:
                raise ValueError(f"tick counts of {name!r} do not fit its categories")
        hist = [int(x) for x in d["score_hist"]]
        if len(hist) not in (0, int(d["score_bins"])):
            raise ValueError("tick score histogram does not fit its bins")
        return cls(str(d["profile_hash"]), True, int(d["n"]), numeric, int(d["score_bins"]), hist,
                   [float(x) for x in d["prediction"]][:2], categories, categorical)

    def merge(self, other: TickSummary) -> TickSummary:
        """The sum of two partitions' shares of one tick (same profile and bins; the caller checks)."""
        numeric = {k: list(v) for k, v in self.numeric.items()}
        for k, (c, s) in other.numeric.items():
            mine = numeric.setdefault(k, [0.0, 0.0])
            mine[0] += c
            mine[1] += s
        categorical = {k: list(v) for k, v in self.categorical.items()}
        for k, counts in other.categorical.items():
            mine_c = categorical.get(k)
            categorical[k] = list(counts) if mine_c is None else [a + b for a, b in zip(mine_c, counts, strict=True)]
        hist = [a + b for a, b in zip(self.score_hist, other.score_hist, strict=True)] if self.score_hist and \
            other.score_hist else list(self.score_hist or other.score_hist)
        return TickSummary(self.profile_hash, True, self.n + other.n, numeric, self.score_bins or other.score_bins,
                           hist, [self.prediction[0] + other.prediction[0], self.prediction[1] + other.prediction[1]],
                           {**other.categories, **self.categories}, categorical)

    def mergeable(self, other: TickSummary) -> bool:
        return self.profile_hash == other.profile_hash and self.score_bins == other.score_bins

    def stats(self) -> TickStats:
        """The tick in the numbers the sequential detectors standardise."""
        numeric = {name: Moments(c, s / c) for name, (c, s) in self.numeric.items() if c > 0}
        score = None
        if self.score_hist and sum(self.score_hist):
            count, mean, _ = hist_moments(self.score_hist)
            score = Moments(count, mean)
        elif self.prediction[0] > 0:
            score = Moments(self.prediction[0], self.prediction[1] / self.prediction[0])
        proportions = {}
        for name, (valid, *counts) in self.categorical.items():
            if valid:
                for category, count in zip(self.categories[name], counts, strict=True):
                    proportions[proportion_stream(name, category)] = Moments(float(valid), count / valid)
        return TickStats(numeric, score, proportions=proportions)


def _sums(values: np.ndarray) -> list[float]:
    ok = np.isfinite(values)
    return [float(np.count_nonzero(ok)), float(values[ok].sum())]


class TickSummarizer:
    """The summarize stage's fold of predictions into `TickSummary` per tick (a `Summarizer`)."""

    def __init__(self, profile_for: Callable[[str, str, int], ReferenceProfile] | None = None,
                 config_for: Callable[[str, str], ResolvedModelConfig] | None = None) -> None:
        self.profile_for = profile_for or (lambda _model, _version, _start: DISCOVERY)
        self.config_for = config_for or (lambda model, version: DEFAULTS.resolve(model, version))

    def new(self, model_id: str, model_version: str, tick_start_ms: int) -> TickSummary:
        profile = self.profile_for(model_id, model_version, tick_start_ms)
        config = self.config_for(model_id, model_version)
        if profile.discover or not config.detectors.sequential.enabled:
            return TickSummary(profile.content_hash(), False)
        classifier = profile.task == "classification"
        bins = config.summary.score_bins if classifier else 0
        categories = {name: tuple(cats) for name, cats in profile.categories.items()}
        return TickSummary(profile.content_hash(), True, score_bins=bins, score_hist=[0] * bins,
                           categories=categories, categorical={name: [0] * (len(c) + 1) for name, c in
                                                               categories.items()})

    def add(self, acc: TickSummary, predictions: Sequence[Prediction], columns: FeatureColumns | None = None
            ) -> None:
        """Fold predictions in; ``columns``: their feature columns and outputs, when their window built them."""
        if not acc.active:
            return
        if columns is None:
            config = self.config_for(predictions[0].model_id, predictions[0].model_version)
            numeric, categorical = feature_columns([p.features for p in predictions], config.features)
            outputs = column(predictions, "prediction")
        else:
            _, numeric, categorical, outputs = columns
        acc.n += len(predictions)
        for name, values in numeric.items():
            if name in acc.categories:
                continue
            c, s = _sums(values)
            mine = acc.numeric.setdefault(name, [0.0, 0.0])
            mine[0] += c
            mine[1] += s
        for name, cats in acc.categories.items():
            values = categorical.get(name)
            if values is None:
                continue
            seen = Counter(values)  # counted in C, then read per distinct value
            counts = acc.categorical[name]
            # valid values are strings (booleans arrive as "true"/"false")
            counts[0] += sum(k for v, k in seen.items() if type(v) is str)
            for i, category in enumerate(cats):
                counts[i + 1] += seen.get(category, 0)
        if acc.score_bins:
            scores = np.array([math.nan if v is None else v for v in column(outputs, "score")], dtype=np.float64)
            scores = scores[np.isfinite(scores)]
            if scores.size:
                hist = np.bincount(unit_bin_index(scores, acc.score_bins), minlength=acc.score_bins)
                acc.score_hist = (np.asarray(acc.score_hist, dtype=np.int64) + hist).tolist()
        else:
            values = np.array([math.nan if v is None else v for v in column(outputs, "value")], dtype=np.float64)
            c, s = _sums(values)
            acc.prediction = [acc.prediction[0] + c, acc.prediction[1] + s]

    def to_bytes(self, acc: TickSummary) -> bytes:
        return acc.to_bytes()


def merge_ticks(parts: Sequence[bytes]) -> tuple[TickSummary | None, int]:
    """Merge the partitions' tick bodies made against the same profile as most events'; (tick, events left out)."""
    ticks = [TickSummary.from_bytes(b) for b in parts]
    if not ticks:
        return None, 0
    weight: dict[tuple[str, int], int] = {}
    for t in ticks:
        weight[(t.profile_hash, t.score_bins)] = weight.get((t.profile_hash, t.score_bins), 0) + t.n + 1
    chosen = max(weight, key=lambda k: (weight[k], k))
    kept = [t for t in ticks if (t.profile_hash, t.score_bins) == chosen]
    merged = kept[0]
    for t in kept[1:]:
        merged = merged.merge(t)
    return merged, sum(t.n for t in ticks if (t.profile_hash, t.score_bins) != chosen)


def tick_shape(resolve: Callable[[str, str], ResolvedModelConfig]) -> SpecOf:
    """A model version's tick spec from its configuration (the worker's)."""
    return lambda model_id, version: WindowSpec(*tick_spec_ms(resolve(model_id, version)))
