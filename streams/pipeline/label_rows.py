"""The merge stage's label windows: cumulative label summaries per prediction window, re-emitted as labels land.

Rows carry ``revision`` = labels merged so far (it only grows), so ``FINAL`` shows the latest numbers.
A label summary from an input partition is merged once: its last label offset must pass the last one
merged for that (window, partition), which also survives restarts in ``driftline.label_windows``.

Label summaries of one window are binned against the profile its predictions were (the summarize stage holds a
partition back until an automatic reference is known, see ``streams.reference_wait``). Should two still
disagree (a reference that reached one worker late), the one made against the profile in force for the
window is kept, the other's labelled rows are counted in ``conflicts`` and reported in a
``merge_conflict`` row, and ``driftline_merge_conflicts_total{kind="labels"}`` counts it: one window never
stops the stage.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import reduce
from typing import Any

from clickhouse_connect.driver.client import Client

from driftline.detectors.calibration import CalibrationDrift
from driftline.detectors.findings import Finding
from driftline.detectors.performance import PerformanceDrop
from driftline.detectors.slices import SliceAccuracy
from driftline.detectors.summaries import WindowSummary
from driftline.streams import metrics, store
from driftline.streams.config.model_config import ResolvedModelConfig
from driftline.streams.pipeline.envelope import LabelHeader
from driftline.streams.pipeline.evaluate import build_detectors
from driftline.streams.pipeline.rows import to_rows
from driftline.streams.pipeline.windows import WindowKey
from driftline.streams.references.book import ReferenceBook

log = logging.getLogger("driftline.labels")
LABEL_DETECTORS = (PerformanceDrop, CalibrationDrift, SliceAccuracy)
STATE_COLUMNS = ("model_id", "model_version", "window_start", "partition", "last_offset", "labeled", "correct",
                 "abs_err", "sq_err", "unmatched", "conflicts", "summary")


@dataclass(frozen=True, slots=True)
class PartState:
    last_offset: int
    labeled: int = 0
    correct: int = 0
    abs_err: float = 0.0
    sq_err: float = 0.0
    unmatched: int = 0
    conflicts: int = 0
    summary: bytes = b""


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class LabelWindows:
    def __init__(self, client: Client, book: ReferenceBook,
                 config_for: Callable[[str, str], ResolvedModelConfig]) -> None:
        self.client = client
        self.book = book
        self.config_for = config_for
        self.state: dict[WindowKey, dict[int, PartState]] = {}
        self.counts: dict[WindowKey, int] = {}

    def window_closed(self, key: WindowKey) -> None:
        """Read the window's count from the store next time: a replayed close may have seen only part of it."""
        self.counts.pop(key, None)

    def apply(self, header: LabelHeader, body: bytes) -> None:
        key = (header.model_id, header.model_version, header.window_start_ms)
        parts = self._load(key)
        current = parts.get(header.partition)
        if current is not None and header.last_offset <= current.last_offset:
            return
        base = current or PartState(-1)
        expected = self.book.profile_for(*key).content_hash()
        merged_summary, dropped = combine_label_summaries(base.summary, body, expected)
        if dropped:
            metrics.MERGE_CONFLICTS.labels(kind="labels").inc()
            log.warning("%s partition %s: label summaries made against different profiles; %d labelled "
                        "predictions left out of the label detectors", key, header.partition, dropped)
        new = replace(base, last_offset=header.last_offset, labeled=base.labeled + header.labeled,
                      correct=base.correct + header.correct, abs_err=base.abs_err + header.abs_err,
                      sq_err=base.sq_err + header.sq_err, unmatched=base.unmatched + header.unmatched,
                      conflicts=base.conflicts + dropped, summary=merged_summary)
        row = [key[0], key[1], _ts(key[2]), header.partition, new.last_offset, new.labeled, new.correct,
               new.abs_err, new.sq_err, new.unmatched, new.conflicts, base64.b64encode(new.summary).decode()]
        self.client.insert("driftline.label_windows", [row], column_names=STATE_COLUMNS,
                           settings={"insert_deduplication_token": f"{key}|{header.partition}|{new.last_offset}"})
        parts[header.partition] = new
        metrics.LABELS_JOINED.inc(header.labeled)
        rows = self._rows(key, header.window_size_ms, parts)
        revision = sum(p.labeled + p.unmatched for p in parts.values())
        store.insert_windows(self.client, rows, token=f"{key}|labels|{revision}")

    def _load(self, key: WindowKey) -> dict[int, PartState]:
        if key not in self.state:
            _, found = store.query(self.client, (
                "SELECT partition, last_offset, labeled, correct, abs_err, sq_err, unmatched, conflicts, summary "
                "FROM driftline.label_windows FINAL WHERE model_id = {m:String} AND model_version = {v:String} "
                "AND window_start = fromUnixTimestamp64Milli({s:Int64})"), {"m": key[0], "v": key[1], "s": key[2]})
            self.state[key] = {int(r[0]): PartState(int(r[1]), int(r[2]), int(r[3]), float(r[4]), float(r[5]),
                                                    int(r[6]), int(r[7]), base64.b64decode(r[8])) for r in found}
        return self.state[key]

    def _count(self, key: WindowKey) -> int | None:
        if key not in self.counts:
            _, found = store.query(self.client, (
                "SELECT argMax(value, revision) FROM driftline.windows WHERE metric = 'count' AND "
                "model_id = {m:String} AND model_version = {v:String} AND "
                "window_start = fromUnixTimestamp64Milli({s:Int64})"), {"m": key[0], "v": key[1], "s": key[2]})
            if not found or not found[0][0] or math.isnan(found[0][0]):
                return None
            self.counts[key] = int(found[0][0])
        return self.counts[key]

    def _rows(self, key: WindowKey, size_ms: int, parts: dict[int, PartState]) -> list[list[Any]]:
        config = self.config_for(key[0], key[1]) if key[1] else None
        return label_rows(key, size_ms, parts, self._count(key) if key[1] else None, self.book, config)


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
               config: ResolvedModelConfig | None) -> list[list[Any]]:
    """The rows of one prediction window's labels so far (``count``: the window's predictions, if known)."""
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
        for detector in build_detectors(ref.summary, config):
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
