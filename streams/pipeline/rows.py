"""The merge stage's finalizer: merge a model window's partition summaries, run its detectors, make ``windows`` rows."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import reduce
from typing import Any

import orjson

from driftline.detectors.feature_limits import keep_features
from driftline.detectors.findings import Finding
from driftline.detectors.summaries import WindowSummary
from driftline.streams import metrics
from driftline.streams.config.model_config import ResolvedModelConfig
from driftline.streams.pipeline.envelope import SummaryHeader
from driftline.streams.pipeline.evaluate import ModelEvaluator
from driftline.streams.pipeline.summarize import is_output
from driftline.streams.pipeline.windows import WindowKey
from driftline.streams.references.automatic import AutoReferences
from driftline.streams.references.book import Reference, ReferenceBook

log = logging.getLogger("driftline.rows")


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def merge_parts(parts: Sequence[tuple[SummaryHeader, bytes]]) -> tuple[WindowSummary, int, int]:
    """Merge the partitions' summaries; those made against another profile (or other configured sizes)
    than most events' are left out.

    That happens only when a reference or a configuration change reached some partitions after they opened
    the window; the events and partition summaries left out are returned so the window reports them
    (``unmerged_events``, ``merge_conflict``).
    """
    summaries = [WindowSummary.from_bytes(body) for _, body in parts]
    weight = Counter[tuple[Any, ...]]()
    for s in summaries:
        weight[_mergeable(s)] += s.n + 1
    chosen = max(weight, key=lambda k: (weight[k], k))
    kept = [s for s in summaries if _mergeable(s) == chosen]
    left_out = [s for s in summaries if _mergeable(s) != chosen]
    if left_out:
        metrics.MERGE_CONFLICTS.labels(kind="predictions").inc(len(left_out))
    return reduce(lambda a, b: a.merge(b), kept), sum(s.n for s in left_out), len(left_out)


def _mergeable(s: WindowSummary) -> tuple[Any, ...]:
    """Summaries with equal keys merge: same profile and the same configured sizes."""
    return s.profile_hash, s.slice_pairs, s.max_slices, s.reservoir.capacity


def base_metrics(summary: WindowSummary, late_events: int, unmerged: int, conflicts: int) -> list[Finding]:
    """The descriptive numbers of every window: volume, lateness, and each numeric feature's moments."""
    found = [Finding("count", float(summary.n), None, False), Finding("late_events", float(late_events), None, False)]
    if unmerged or conflicts:
        found += [Finding("unmerged_events", float(unmerged), None, False),
                  Finding("merge_conflict", float(conflicts), None, False,
                          detail={"left_out": "partition summaries"})]
    if summary.dropped_features:  # present values of features over the model's summary.max_features
        found.append(Finding("dropped_features", float(summary.dropped_features), None, False))
    for name, cat in sorted(summary.categorical.items()):
        if cat.folded:  # values in the `other` bucket whose category is not even in the bounded unseen sample
            found.append(Finding("folded_categories", float(cat.folded), None, False, feature=name,
                                 detail={"n": cat.valid, "categories": len(cat.categories),
                                         "unseen_kept": len(cat.unseen)}))
    for name, num in sorted(summary.numeric.items()):
        total = num.count + num.missing
        found.append(Finding("missing", float(num.missing), None, False, feature=name, detail={"n": total}))
        if num.count:
            found += [Finding("mean", float(num.mean), None, False, feature=name, detail={"n": num.count}),
                      Finding("min", float(num.min), None, False, feature=name, detail={"n": num.count}),
                      Finding("max", float(num.max), None, False, feature=name, detail={"n": num.count})]
    return found


def to_rows(key: WindowKey, size_ms: int, findings: Sequence[Finding], n_default: int, reference_id: str = "",
            config_version: str = "", revision: int = 0) -> list[list[Any]]:
    model_id, model_version, start = key
    begin, end = _ts(start), _ts(start + size_ms)
    rows = []
    for f in findings:
        detail = dict(f.detail)
        n = int(detail.pop("n", n_default))
        value = float(f.value) if math.isfinite(f.value) else math.nan
        rows.append([model_id, model_version, begin, end, f.metric, f.feature, f.slice, value, n,
                     int(f.breached), f.threshold, f.p_value,
                     orjson.dumps(detail, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                                  default=str).decode(),
                     reference_id, config_version, revision])
    return rows


class WindowRows:
    """Base metrics for every window; detector findings once the model version has a reference."""

    def __init__(self, book: ReferenceBook, config_for: Callable[[str, str], ResolvedModelConfig],
                 publish: Callable[[Reference], None]) -> None:
        self.book = book
        self.config_for = config_for
        self.publish = publish
        self.auto = AutoReferences()
        self.evaluators: dict[tuple[str, str, str, str, str], ModelEvaluator] = {}

    def rows(self, key: WindowKey, size_ms: int, parts: Sequence[tuple[SummaryHeader, bytes]]) -> list[list[Any]]:
        model_id, model_version, start = key
        summary, unmerged, conflicts = merge_parts(parts)
        late = sum(header.late_events for header, _ in parts)
        config = self.config_for(model_id, model_version)
        keep_features(summary, is_output)
        findings = base_metrics(summary, late, unmerged, conflicts)
        metrics.DROPPED_FEATURES.inc(summary.dropped_features)
        metrics.FOLDED_CATEGORIES.inc(sum(cat.folded for cat in summary.categorical.values()))
        ref = self.book.at(model_id, model_version, start)
        reference_id = ""
        if ref is not None and ref.summary is not None and ref.profile.content_hash() == summary.profile_hash:
            findings += self._evaluator(ref, config).evaluate(summary)
            reference_id = ref.reference_id
        else:
            latest = self.book.latest(model_id, model_version)
            ready = self.auto.observe(model_id, model_version, start, size_ms, summary, latest, config.reference)
            if ready is not None:
                self.book.add(ready)
                self.publish(ready)
                log.info("reference %s of %s/%s %s", ready.reference_id, model_id, model_version,
                         "complete" if ready.summary is not None else f"effective from {ready.effective_from_ms}")
        return to_rows(key, size_ms, findings, summary.n, reference_id, config.version)

    def warming_up(self, model_id: str, model_version: str) -> bool:
        return self.auto.warming_up(model_id, model_version)

    def _evaluator(self, ref: Reference, config: ResolvedModelConfig) -> ModelEvaluator:
        key = (ref.model_id, ref.model_version, ref.reference_id, ref.content_hash, config.version)
        evaluator = self.evaluators.get(key)
        if evaluator is None:
            assert ref.summary is not None
            evaluator = self.evaluators[key] = ModelEvaluator(ref.summary, config)
        return evaluator
