"""Automatic references: a model version without one is watched in discovery mode, then referenced on itself.

1. The first K windows (``reference.windows``) are summarised against the discovery profile; their merged
   histograms give the reference profile: quantile edges (snapped to the discovery grid), the categories
   seen, and the model's classes (binary: the positive class is the label with the higher mean score).
2. The profile takes effect three windows after the K-th (``reference_wait.effective_from``), so every
   partition opens those windows with it (a partition that gets there first waits for it, see
   ``streams.reference_wait``); the next K windows under the new profile become the reference summary.
3. From then on the detectors compare every window with it. Rows of the warm-up carry no reference id.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from driftline.detectors.feature_limits import keep_features
from driftline.detectors.reference import ReferenceProfile
from driftline.detectors.summaries import WindowSummary
from driftline.streams.config.model_config import ReferenceConfig
from driftline.streams.pipeline.summarize import LABEL, SCORE, VALUE, is_output
from driftline.streams.references.book import Reference
from driftline.streams.references.wait import effective_from

SCORE_BY_LABEL = SCORE + "["
# Model versions learning their profile at once. Beyond it the one whose last window is the oldest forgets its
# warm-up (it starts again with its next window): a flood of model ids, each with a window or two, would
# otherwise keep one summary each for ever, and the merge stage's commit behind the first of them.
MAX_WARMING_UP = 10_000


def _edges(summary: WindowSummary, name: str, n_bins: int) -> np.ndarray | None:
    ns = summary.numeric[name]
    if ns.count == 0:
        return None
    qs = np.atleast_1d(ns.quantile(np.linspace(0.0, 1.0, n_bins + 1)))
    lo, hi = ns.min, ns.max
    edges = np.unique(np.clip(np.asarray(qs, dtype=np.float64), lo, hi))
    if edges.size == 1 or not np.all(np.isfinite(edges)):
        edges = np.array([lo, np.nextafter(lo, math.inf)]) if lo == hi else np.array([lo, hi])
    edges[-1] = np.nextafter(edges[-1], math.inf)
    return edges


def profile_from_discovery(summary: WindowSummary, config: ReferenceConfig) -> ReferenceProfile:
    numeric = {}
    for name in summary.numeric:
        if name.startswith("prediction."):
            continue
        edges = _edges(summary, name, config.n_bins)
        if edges is not None:
            numeric[name] = edges
    categories = {}
    for name, cs in summary.categorical.items():
        if name == LABEL:
            continue
        ranked = sorted(cs.unseen.items(), key=lambda kv: (-kv[1], kv[0]))[: config.max_categories]
        categories[name] = tuple(k for k, _ in ranked)
    classes = None
    task = None
    prediction_edges = None
    if LABEL in summary.categorical and summary.categorical[LABEL].unseen:
        labels = sorted(summary.categorical[LABEL].unseen)
        if len(labels) == 2:
            def mean_score(label: str) -> float:
                ns = summary.numeric.get(f"{SCORE_BY_LABEL}{label}]")
                return ns.mean if ns is not None and ns.count else -math.inf
            labels.sort(key=mean_score)
        if len(labels) >= 2:
            classes, task = tuple(labels), "classification"
    elif VALUE in summary.numeric and summary.numeric[VALUE].count:
        prediction_edges = _edges(summary, VALUE, config.n_bins)
        task = "regression"
    return ReferenceProfile(numeric_edges=numeric, categories=categories, classes=classes, task=task,
                            n_bins=config.n_bins, prediction_edges=prediction_edges)


class AutoReferences:
    """Per model version: the warm-up state machine above. In memory: the merge stage keeps its commit behind
    the windows it learns from (``warming_up``), so a restart learns from the same windows."""

    def __init__(self) -> None:
        self.discovery: dict[tuple[str, str], tuple[int, WindowSummary]] = {}
        self.reference_windows: dict[tuple[str, str, str], tuple[int, WindowSummary]] = {}

    def warming_up(self, model_id: str, model_version: str) -> bool:
        """Whether windows of the model version are being collected for its profile or its reference data."""
        return (model_id, model_version) in self.discovery or any(
            key[:2] == (model_id, model_version) for key in self.reference_windows)

    def observe(self, model_id: str, model_version: str, window_start_ms: int, size_ms: int,
                summary: WindowSummary, current: Reference | None, config: ReferenceConfig) -> Reference | None:
        """Feed a closed window without a usable reference; returns a reference to publish when one is ready.

        ``current`` is the model version's latest reference, if any (even one not yet in force).
        """
        key = (model_id, model_version)
        if current is None:
            if config.source != "auto" or not summary.discover:
                return None
            count, merged = self.discovery.pop(key, (0, None))  # type: ignore[assignment]
            merged = summary if merged is None else merged.merge(summary)
            count += 1
            if count < config.windows:
                self.discovery[key] = (count, merged)  # (re)inserted last: the dict is in order of last window
                if len(self.discovery) > MAX_WARMING_UP:
                    del self.discovery[next(iter(self.discovery))]
                return None
            keep_features(merged, is_output)  # each window kept max_features, not necessarily the same ones
            profile = profile_from_discovery(merged, config)
            digest = hashlib.sha256(merged.to_bytes()).hexdigest()
            # named by its profile, which is exact (bin counts), not by the summary's float moments, which
            # depend on how the events were batched: a worker behind its traffic names it as a live one does
            return Reference(model_id, model_version, f"auto-{profile.content_hash()[:12]}", digest,
                             f"auto:{config.windows}-windows",
                             effective_from(window_start_ms, size_ms), profile)
        if current.summary is not None or summary.profile_hash != current.profile.content_hash():
            return None
        rkey = (model_id, model_version, current.reference_id)
        count, merged = self.reference_windows.get(rkey, (0, None))  # type: ignore[assignment]
        merged = summary if merged is None else merged.merge(summary)
        count += 1
        if count < config.windows:
            self.reference_windows[rkey] = (count, merged)
            return None
        self.reference_windows.pop(rkey, None)
        return current.with_summary(merged)
