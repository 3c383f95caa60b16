"""Label rows of a prediction window, from its per-partition label state: pure, no Kafka, no store.

``PartState`` is what one input partition has merged into a window so far (its label counts and one label
summary); ``combine_label_summaries`` folds a new label summary in, and ``label_rows`` makes the window's
``windows`` rows: label counts, coverage, accuracy or errors, the label detectors' findings and a
``merge_conflict`` row for labelled predictions whose summary was made against another profile. The merge
stage (``streams.stages.label_windows``) and the backtest share them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from driftline.detectors.calibration import CalibrationDrift
from driftline.detectors.findings import Finding
from driftline.detectors.performance_drop import PerformanceDrop
from driftline.detectors.slice_accuracy import SliceAccuracy
from driftline.detectors.summaries import WindowSummary
from driftline.streams.config.model_config import ResolvedModelConfig
from driftline.streams.pipeline.evaluate import build_detectors
from driftline.streams.pipeline.rows import to_rows
from driftline.streams.pipeline.windows import WindowKey
from driftline.streams.references.book import Reference, ReferenceBook

LABEL_DETECTORS = (PerformanceDrop, CalibrationDrift, SliceAccuracy)


@dataclass(frozen=True, slots=True)
class PartState:
    """One input partition's label state of a window; stored by field name (``store.LABEL_STATE_FIELDS``)."""

    last_offset: int
    labeled: int = 0
    correct: int = 0
    abs_err: float = 0.0
    sq_err: float = 0.0
    unmatched: int = 0
    conflicts: int = 0
    summary: bytes = b""


def _labelled(summary: WindowSummary) -> int:
    if summary.classifier is not None:
        return summary.classifier.labeled
    return summary.regression.labeled if summary.regression is not None else 0


def combine_label_summaries(stored: bytes, new: bytes, expected_profile: str) -> tuple[bytes, int]:
    """One partition's label summary of a window so far, with ``new`` folded in; and the labelled rows left out.

    Summaries made against different profiles cannot be merged: the one made against ``expected_profile``
    (the window's, from the reference in force) is kept, else the newer one.
    """
    if not stored or not new:
        return stored or new, 0
    a, b = WindowSummary.from_bytes(stored), WindowSummary.from_bytes(new)
    if a.profile_hash == b.profile_hash:
        return a.merge(b).to_bytes(), 0
    if a.profile_hash == expected_profile:
        return stored, _labelled(b)
    return new, _labelled(a)


def fold_label_summaries(summaries: list[bytes], expected_profile: str) -> tuple[bytes, int]:
    """``combine_label_summaries`` over one partition's label summaries of a window, in order."""
    kept, dropped = b"", 0
    for summary in summaries:
        kept, lost = combine_label_summaries(kept, summary, expected_profile)
        dropped += lost
    return kept, dropped


def label_rows(key: WindowKey, size_ms: int, parts: dict[int, PartState], count: int | None, book: ReferenceBook,
               config: ResolvedModelConfig | None,
               detectors_for: Callable[[Reference, ResolvedModelConfig], Sequence[Any]] | None = None
               ) -> list[list[Any]]:
    """The rows of one prediction window's labels so far (``count``: the window's predictions, if known).

    ``detectors_for`` gives the model version's detectors for a reference with a summary (default: built anew,
    `evaluate.build_detectors`); a caller that makes rows often keeps them.
    """
    labeled = sum(p.labeled for p in parts.values())
    unmatched = sum(p.unmatched for p in parts.values())
    revision = labeled + unmatched
    if key[1] == "" or config is None:
        return to_rows(key, size_ms, [Finding("labels_unmatched", float(unmatched), None, False)], unmatched,
                       revision=revision)
    findings = [Finding("labels", float(labeled), None, False)]
    if count:
        findings.append(Finding("label_coverage", labeled / count, None, False, detail={"n": count}))
    ref = book.at(*key)
    expected = book.profile_for(*key).content_hash()
    summaries = [WindowSummary.from_bytes(p.summary) for p in parts.values() if p.summary]
    comparable = [s for s in summaries if s.profile_hash == expected]
    conflicts = sum(p.conflicts for p in parts.values()) + sum(_labelled(s) for s in summaries
                                                                if s.profile_hash != expected)
    if conflicts:
        findings.append(Finding("merge_conflict", float(conflicts), None, False,
                                detail={"n": labeled, "left_out": "labelled predictions"}))
    judged: list[Finding] = []
    if comparable and ref is not None and ref.summary is not None:
        merged = reduce(lambda a, b: a.merge(b), comparable)
        detectors = build_detectors(ref.summary, config) if detectors_for is None else detectors_for(ref, config)
        for detector in detectors:
            if isinstance(detector, LABEL_DETECTORS):
                judged += detector.update(merged)
    if labeled and not any(f.metric == "accuracy" for f in judged):
        correct = sum(p.correct for p in parts.values())
        if correct or not any(p.abs_err or p.sq_err for p in parts.values()):
            findings.append(Finding("accuracy", correct / labeled, None, False, detail={"n": labeled}))
        else:
            findings += [Finding("mae", sum(p.abs_err for p in parts.values()) / labeled, None, False),
                         Finding("rmse", math.sqrt(sum(p.sq_err for p in parts.values()) / labeled), None, False)]
    reference_id = ref.reference_id if ref is not None else ""
    return to_rows(key, size_ms, findings + judged, labeled, reference_id, config.version, revision)
