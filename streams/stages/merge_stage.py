"""The merge stage: merge the partitions' summaries of each model window, close it on the watermark, write rows.

A model window closes once every input partition's watermark (published by the summarize stage after the summaries
it covers) has passed the window's end plus its lateness: `WindowSpec.closed_by` at the slowest partition's watermark
(`SinkPartition.closing`), the rule each partition's windows closed by in the summarize stage. Idle input
partitions are advanced by the summarize stage on wall-clock time, so they never hold a window open. A summary for
a window that has already closed is a replay duplicate (the summarize stage emits a window before the watermark
that passes it) and is dropped; a restart re-reads from the oldest open window and any window it writes twice
carries the same insert-deduplication token. Ticks for the sequential detectors travel on the same topic and
close on the same watermarks, just before the windows those watermarks close (``stages.tick_detection``).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from clickhouse_connect.driver.client import Client
from confluent_kafka import OFFSET_INVALID, Consumer, Message, TopicPartition

from driftline.streams import metrics, store, store_retry
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import kafka_io, topics
from driftline.streams.kafka.refusals import DeadLetters
from driftline.streams.pipeline import envelope
from driftline.streams.pipeline.envelope import LabelHeader, SummaryHeader, TickHeader, Watermark
from driftline.streams.pipeline.windows import WindowKey, WindowSpec, closing
from driftline.streams.references.book import Reference
from driftline.streams.references.topic import ReferenceFollower
from driftline.streams.stages.consumer import ConsumerStage, records
from driftline.streams.stages.findings_publisher import FindingsPublisher
from driftline.streams.stages.label_windows import LabelWindows
from driftline.streams.stages.tick_detection import TickDetection

log = logging.getLogger("driftline.merge")
CLOSED_MEMORY_WINDOWS = 64


class Finalizer(Protocol):
    """Turns the partitions' summaries of one closed model window into ``windows`` rows."""

    def rows(self, key: WindowKey, size_ms: int, parts: Sequence[tuple[SummaryHeader, bytes]]) -> list[list[Any]]: ...

    def warming_up(self, model_id: str, model_version: str) -> bool:
        """Whether the model version's automatic reference is being learnt from the windows closed so far."""
        ...


@dataclass(slots=True)
class _Pending:
    first_seen_offset: int
    spec: WindowSpec
    parts: dict[int, tuple[SummaryHeader, bytes]] = field(default_factory=dict)
    labels: list[tuple[LabelHeader, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class SinkPartition:
    """One partition of the summaries topic: its model windows still open and its input partitions' watermarks."""

    pending: dict[WindowKey, _Pending] = field(default_factory=dict)
    marks: dict[int, int] = field(default_factory=dict)
    n_inputs: int = 0
    closed: dict[WindowKey, int] = field(default_factory=dict)
    next_offset: int | None = None
    # per model version learning its automatic reference: the first offset of the windows it learns from (the
    # learning is in memory, so the commit stays behind them and a restart learns from the same windows)
    warm_up_from: dict[tuple[str, str], int] = field(default_factory=dict)

    def min_mark(self) -> int | None:
        """The event time of the slowest input partition, once every input partition has reported one."""
        if self.n_inputs == 0 or any(p not in self.marks for p in range(self.n_inputs)):
            return None
        return min(self.marks[p] for p in range(self.n_inputs))

    def closed_by_marks(self, key: WindowKey, spec: WindowSpec) -> bool:
        """Whether the model window has closed: written already, or every input partition's watermark passed it."""
        return key in self.closed or spec.closed_by(key[2], self.min_mark())

    def closing(self) -> list[WindowKey]:
        """The pending model windows the input partitions' watermarks close, in the order they close."""
        return closing({k: p.spec for k, p in self.pending.items()}, self.min_mark())


class MergeStage(ConsumerStage):
    def __init__(self, settings: Settings, finalizer: Finalizer, client: Client, stop: threading.Event,
                 references: ReferenceFollower | None = None, labels: LabelWindows | None = None,
                 findings: FindingsPublisher | None = None, ticks: TickDetection | None = None) -> None:
        super().__init__(kafka_io.consumer(settings, f"{settings.consumer_group}-stage2"), stop,
                         references, 1000)
        self.settings = settings
        self.finalizer = finalizer
        self.client = client
        self.labels = labels
        self.findings = findings
        self.ticks = ticks
        self.source = settings.topic(topics.SUMMARIES)
        self.parts: dict[int, SinkPartition] = {}
        self.refusals = DeadLetters(settings)

    def subscriptions(self) -> list[str]:
        return [self.source]

    def references_read(self, refs: list[Reference]) -> None:
        """Record every reference in driftline.references, for audit."""
        for ref in refs:
            summary = base64.b64encode(ref.summary.to_bytes()).decode() if ref.summary is not None else ""
            row = [ref.model_id, ref.model_version, ref.reference_id, ref.content_hash, ref.source,
                   datetime.fromtimestamp(ref.effective_from_ms / 1000, tz=UTC),
                   orjson.dumps(ref.profile.to_dict()).decode(), summary]
            store_retry.call(store.insert_reference, self.client, row,
                             token=f"{ref.reference_id}|{ref.effective_from_ms}|{ref.content_hash}|{bool(summary)}")

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        for tp in consumer.committed(assigned, timeout=30):
            state = SinkPartition()
            if tp.offset != OFFSET_INVALID:
                state.next_offset = tp.offset
            self.parts[tp.partition] = state
        if self.ticks is not None:
            self.ticks.assign(tp.partition for tp in assigned)
        log.info("merge stage assigned %s", sorted(tp.partition for tp in assigned))

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._checkpoint(only={tp.partition for tp in revoked})
        for tp in revoked:
            self.parts.pop(tp.partition, None)
        if self.ticks is not None:
            self.ticks.revoke(tp.partition for tp in revoked)

    def _on_lost(self, consumer: Consumer, lost: list[TopicPartition]) -> None:
        for tp in lost:
            self.parts.pop(tp.partition, None)
        if self.ticks is not None:
            self.ticks.revoke(tp.partition for tp in lost)

    def _process(self, batch: list[Message]) -> None:
        closed_labels: list[tuple[LabelHeader, bytes]] = []  # of windows already closed: applied together
        for msg in records(batch):
            state = self.parts.get(msg.partition())
            if state is None:
                continue
            state.next_offset = msg.offset() + 1
            try:
                header, body = envelope.decode(msg.value() or b"")
                # a window's size and lateness are read here too, so a malformed one is unreadable, not a crash
                spec = None if isinstance(header, Watermark) else WindowSpec(header.tick_size_ms, header.lateness_ms) \
                    if isinstance(header, TickHeader) else WindowSpec(header.window_size_ms, header.lateness_ms)
            except ValueError as exc:  # InvalidRecord from the envelope, or a WindowSpec the header cannot have
                self.refusals.refuse(msg, exc)
                continue
            if isinstance(header, Watermark):
                state.n_inputs = header.partitions
                state.marks[header.partition] = max(state.marks.get(header.partition, header.event_time_ms),
                                                    header.event_time_ms)
                continue
            assert spec is not None  # every header but a watermark has one
            if isinstance(header, TickHeader):
                state.n_inputs = max(state.n_inputs, header.partitions)
                if self.ticks is not None:
                    self.ticks.receive(msg.partition(), header, body, msg.offset(), state.min_mark())
                continue
            key = (header.model_id, header.model_version, header.window_start_ms)
            if isinstance(header, LabelHeader):
                if self.ticks is not None:
                    self.ticks.labels(header)
                if self._label(state, key, header, body, _Pending(msg.offset(), spec)):
                    closed_labels.append((header, body))
                continue
            if state.closed_by_marks(key, spec):
                continue
            state.n_inputs = max(state.n_inputs, header.partitions)
            pending = state.pending.get(key)
            if pending is None:
                pending = state.pending[key] = _Pending(msg.offset(), spec)
            elif pending.spec.size_ms != spec.size_ms:
                log.warning("%s: partition %s summarised %s ms windows, others %s ms (a window_seconds change "
                            "not yet on every worker); merged as one window", key, header.partition,
                            spec.size_ms, pending.spec.size_ms)
            known = pending.parts.get(header.partition)
            if known is None or header.first_offset < known[0].first_offset:
                pending.parts[header.partition] = (header, body)
        if closed_labels and self.labels is not None:
            self.labels.apply(closed_labels)
        self.refusals.settle()
        self._close_ready()

    def _label(self, state: SinkPartition, key: WindowKey, header: LabelHeader, body: bytes, new: _Pending) -> bool:
        """Labels of a window still open wait for it (so its count is known); True: its window has closed,
        apply them now."""
        if self.labels is None:
            return False
        pending = state.pending.get(key)
        if pending is None and header.model_version and not state.closed_by_marks(key, new.spec):
            pending = state.pending[key] = new
        if pending is not None:
            pending.labels.append((header, body))
            return False
        return True

    def _close_ready(self) -> None:
        for partition, state in self.parts.items():
            if self.ticks is not None:  # first: the window rows below report the ticks of the window
                self.ticks.close_ready(partition, state.min_mark())
            for key in state.closing():
                pending = state.pending.pop(key)
                parts = [pending.parts[p] for p in sorted(pending.parts)]
                if parts:
                    size_ms = pending.spec.size_ms
                    rows = self.finalizer.rows(key, size_ms, parts)
                    if self.ticks is not None and rows:
                        rows += self.ticks.window_rows(key, size_ms, rows[0][13], rows[0][14])
                    store_retry.call(store.insert_windows, self.client, rows,
                                     token=f"{key[0]}|{key[1]}|{key[2]}|{size_ms}|r0")
                    metrics.WINDOWS_WRITTEN.inc()
                    if self.findings is not None:
                        self.findings.written(rows, "predictions")
                    if self.finalizer.warming_up(key[0], key[1]):
                        state.warm_up_from.setdefault((key[0], key[1]), pending.first_seen_offset)
                    else:
                        state.warm_up_from.pop((key[0], key[1]), None)
                if self.labels is not None:
                    self.labels.window_closed(key)
                    self.labels.apply(pending.labels)
                state.closed[key] = key[2]
            for model in [m for m in state.warm_up_from if not self.finalizer.warming_up(*m)]:
                del state.warm_up_from[model]  # a warm-up forgotten (automatic.MAX_WARMING_UP) holds nothing back
            if len(state.closed) > CLOSED_MEMORY_WINDOWS:
                for key in sorted(state.closed, key=lambda k: state.closed[k])[:-CLOSED_MEMORY_WINDOWS]:
                    del state.closed[key]
        metrics.OPEN_WINDOWS.labels(stage="merge").set(sum(len(s.pending) for s in self.parts.values()))
        marks = [s.min_mark() for s in self.parts.values()]
        if marks and all(m is not None for m in marks):
            metrics.STAGE2_WATERMARK.set(min(m for m in marks if m is not None) / 1000)

    def _checkpoint(self, only: set[int] | None = None) -> None:
        self._close_ready()
        if self.findings is not None:  # the windows written so far are published before their offsets commit
            self.findings.settle()
        if self.ticks is not None:  # the detectors' state covers every tick fed before these offsets
            self.ticks.save()
        offsets = []
        for partition, state in self.parts.items():
            if only is not None and partition not in only:
                continue
            held = [p.first_seen_offset for p in state.pending.values()] + list(state.warm_up_from.values())
            if self.ticks is not None:
                held += self.ticks.held(partition)
            if held:
                offset = min(held)
            elif state.next_offset is not None:
                offset = state.next_offset
            else:
                continue
            offsets.append(TopicPartition(self.source, partition, offset))
        if offsets:
            kafka_io.commit(self.consumer, offsets)
