"""The merge stage's label windows: cumulative label summaries per prediction window, re-emitted as labels land.

This is the stateful shell around ``streams.pipeline.label_rows`` (which makes the rows): it keeps each
window's per-partition label state, reads it back from the store after a restart, and writes the state and
the rows through ``streams.store``.

Rows carry ``revision`` = labels merged so far (it only grows), so ``FINAL`` shows the latest numbers.
A label summary from an input partition is merged once: its last label offset must pass the last one
merged for that (window, partition), which also survives restarts in ``driftline.label_windows``.

The store holds every window's label state; this stage keeps the ``MAX_WINDOWS`` it used last (a window's
labels arrive within the label delay, so a few windows per model are busy at a time) and reads back any other
when its labels come: a merge worker's memory does not grow with the windows it has seen.

Label summaries of one window are binned against the profile its predictions were (the summarize stage holds a
partition back until an automatic reference is known, see ``streams.references.wait``). Should two still
disagree (a reference that reached one worker late), the one made against the profile in force for the
window is kept, the other's labelled rows are counted in ``conflicts`` and reported in a
``merge_conflict`` row, and ``driftline_merge_conflicts_total{kind="labels"}`` counts it: one window never
stops the stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

from clickhouse_connect.driver.client import Client

from driftline.streams import metrics, store, store_retry
from driftline.streams.config.model_config import ResolvedModelConfig
from driftline.streams.pipeline.envelope import LabelHeader
from driftline.streams.pipeline.evaluate import build_detectors
from driftline.streams.pipeline.label_rows import PartState, combine_label_summaries, label_rows
from driftline.streams.pipeline.windows import WindowKey
from driftline.streams.references.book import Reference, ReferenceBook
from driftline.streams.stages.findings_publisher import FindingsPublisher

log = logging.getLogger("driftline.labels")
MAX_WINDOWS = 1024  # label states kept in memory: ~120 KB each at 20 features and 6 partitions


class LabelWindows:
    def __init__(self, client: Client, book: ReferenceBook,
                 config_for: Callable[[str, str], ResolvedModelConfig],
                 findings: FindingsPublisher | None = None) -> None:
        self.client = client
        self.findings = findings
        self.book = book
        self.config_for = config_for
        self.state: dict[WindowKey, dict[int, PartState]] = {}
        self.counts: dict[WindowKey, int] = {}
        self.detectors: dict[tuple[str, str, str, str, str], list[Any]] = {}

    def window_closed(self, key: WindowKey) -> None:
        """Read the window's count from the store next time: a replayed close may have seen only part of it."""
        self.counts.pop(key, None)

    def apply(self, summaries: Sequence[tuple[LabelHeader, bytes]]) -> None:
        """Merge label summaries, then write each window they touch once: the partitions' new states in one
        insert, the window's label rows in another (per summary that was two inserts and a detector build,
        most of the merge stage's time on a labelled model)."""
        touched: dict[WindowKey, tuple[int, dict[int, PartState], int]] = {}
        for header, body in summaries:
            key = (header.model_id, header.model_version, header.window_start_ms)
            parts = self._load(key)
            size_ms, changed, joined = touched.get(key, (header.window_size_ms, {}, 0))
            current = changed.get(header.partition) or parts.get(header.partition)
            if current is not None and header.last_offset <= current.last_offset:
                continue
            base = current or PartState(-1)
            expected = self.book.profile_for(*key).content_hash()
            merged_summary, dropped = combine_label_summaries(base.summary, body, expected)
            if dropped:
                metrics.MERGE_CONFLICTS.labels(kind="labels").inc()
                log.warning("%s partition %s: label summaries made against different profiles; %d labelled "
                            "predictions left out of the label detectors", key, header.partition, dropped)
            changed[header.partition] = replace(
                base, last_offset=header.last_offset, labeled=base.labeled + header.labeled,
                correct=base.correct + header.correct, abs_err=base.abs_err + header.abs_err,
                sq_err=base.sq_err + header.sq_err, unmatched=base.unmatched + header.unmatched,
                conflicts=base.conflicts + dropped, summary=merged_summary)
            touched[key] = (size_ms, changed, joined + header.labeled)
        for key, (size_ms, changed, joined) in touched.items():
            if not changed:
                continue
            # the states are stored before they count here: a failed write leaves memory as the store has it
            store_retry.call(store.insert_label_state, self.client, key, {p: asdict(s) for p, s in changed.items()})
            parts = self._load(key)  # read back if a batch of more than MAX_WINDOWS windows let it go
            parts.update(changed)
            metrics.LABELS_JOINED.inc(joined)
            rows = self._rows(key, size_ms, parts)
            revision = sum(p.labeled + p.unmatched for p in parts.values())
            store_retry.call(store.insert_windows, self.client, rows, token=f"{key}|labels|{revision}")
            if self.findings is not None and key[1]:
                self.findings.written(rows, "labels")

    def _load(self, key: WindowKey) -> dict[int, PartState]:
        """The window's label state, from memory or else from the store; the least recently used beyond
        ``MAX_WINDOWS`` are let go (with their counts: both are read again when needed)."""
        parts = self.state.pop(key, None)
        if parts is None:
            parts = {partition: PartState(**fields)
                     for partition, fields in store_retry.call(store.load_label_state, self.client, key).items()}
        self.state[key] = parts  # the dict is in order of last use
        while len(self.state) > MAX_WINDOWS:
            oldest = next(iter(self.state))
            del self.state[oldest]
            self.counts.pop(oldest, None)
        return parts

    def _count(self, key: WindowKey) -> int | None:
        if key not in self.counts:
            count = store_retry.call(store.window_count, self.client, key)
            if count is None:  # not written yet: ask again next time rather than remember "unknown"
                return None
            self.counts[key] = count
        return self.counts[key]

    def _rows(self, key: WindowKey, size_ms: int, parts: dict[int, PartState]) -> list[list[Any]]:
        config = self.config_for(key[0], key[1]) if key[1] else None
        return label_rows(key, size_ms, parts, self._count(key) if key[1] else None, self.book, config,
                          self._detectors)

    def _detectors(self, ref: Reference, config: ResolvedModelConfig) -> list[Any]:
        """A model version's detectors, built once per (reference, configuration version) as `rows.WindowRows`
        builds its evaluators."""
        key = (ref.model_id, ref.model_version, ref.reference_id, ref.content_hash, config.version)
        if key not in self.detectors:
            assert ref.summary is not None
            self.detectors[key] = build_detectors(ref.summary, config)
        return self.detectors[key]
