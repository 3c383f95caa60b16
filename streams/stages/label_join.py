"""The summarize stage's label join: delayed labels meet their predictions and become label summaries per window.

Labels are attributed to their *prediction's* event-time window. A label whose prediction is not (yet)
in the join store waits: as long as its predictions partition has not been read up to the label's event time
(a worker catching up on a backlog reads labels far faster than predictions), and then ``label_wait_seconds``
more (the prediction may come late); after that it is counted as unmatched under the label's own model and
event-time window. So that waiting labels stay few, a labels partition holding ``MAX_WAITING`` of them is
paused (`crowded`) until its predictions catch up. Label offsets are committed only up to the oldest waiting
label, after the label summaries before it are delivered.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from driftline.detectors.summaries import WindowSummary
from driftline.errors import KafkaUnavailable
from driftline.streams import metrics
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import refusals, topics
from driftline.streams.kafka.boundary import KAFKA_LOG
from driftline.streams.kafka.security import client_config
from driftline.streams.pipeline import envelope
from driftline.streams.pipeline.decode import EventTimeBounds, InvalidRecord, Label, Prediction, column
from driftline.streams.pipeline.join_store import JoinEntry, PartitionJoinStore, changelog_blocks, segment_pairs
from driftline.streams.pipeline.records import read_label
from driftline.streams.pipeline.summarize import as_label, as_labels
from driftline.streams.pipeline.windows import SpecOf, fixed_shape

log = logging.getLogger("driftline.labels")
DeltaKey = tuple[str, str, int]  # model_id, model_version, window_start_ms
MAX_WAITING = 2_000  # labels waiting per partition before it is paused: each checkpoint retries them all


@dataclass(slots=True)
class LabelDelta:
    summary: WindowSummary
    first_offset: int
    last_offset: int = -1
    labeled: int = 0
    correct: int = 0
    abs_err: float = 0.0
    sq_err: float = 0.0


@dataclass(slots=True)
class LabelPartition:
    store: PartitionJoinStore
    waiting: list[tuple[int, Label, float]] = field(default_factory=list)
    next_offset: int | None = None
    puts: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    joined: list[str] = field(default_factory=list)
    deltas: dict[DeltaKey, LabelDelta] = field(default_factory=dict)
    unmatched: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    paused: bool = False  # too many labels wait (`LabelJoiner.crowded`)
    read_to_ms: int | None = None  # the latest label event time read
    labels_left: bool = False  # records beyond those read (`join_pacing.labels_left`): expire nothing they may claim


class LabelJoiner:
    def __init__(self, settings: Settings, new_summary: Callable[[str, str, int], WindowSummary],
                 shape: SpecOf | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.event_times = EventTimeBounds.of(settings)  # a label's event time is judged as a prediction's
        self.new_summary = new_summary
        self.topic = settings.topic("labels")
        self.join_topic = settings.topic(topics.JOIN_STATE)
        self.shape = shape or fixed_shape(settings.window_seconds * 1000, int(settings.allowed_lateness_seconds * 1000))
        self.parts: dict[int, LabelPartition] = {}

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Take over label partitions: rebuild their join stores from the changelog, all at once."""
        ttl_ms = int(self.settings.max_label_delay_seconds * 1000)
        stores = {tp.partition: PartitionJoinStore(ttl_ms, self.settings.max_join_entries) for tp in partitions}
        reader = Consumer(client_config(self.settings, {
            "group.id": "driftline-join-restore", "enable.auto.commit": False, "fetch.message.max.bytes": 8_388_608,
            "fetch.wait.max.ms": 50, "logger": KAFKA_LOG}))
        try:
            ends = {p: reader.get_watermark_offsets(TopicPartition(self.join_topic, p), timeout=10)[1] for p in stores}
            todo = {p for p, high in ends.items() if high > 0}
            reader.assign([TopicPartition(self.join_topic, p, OFFSET_BEGINNING) for p in todo])
            deadline = time.monotonic() + 120
            while todo:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(f"could not read {self.join_topic} {sorted(todo)} back in 120 s")
                for msg in reader.consume(1000, timeout=0.1):
                    if msg.error() is None:
                        try:
                            stores[msg.partition()].apply(msg.value())
                        except InvalidRecord as exc:
                            refusals.skipped(self.join_topic, f"{msg.partition()}/{msg.offset()}", exc)
                        if msg.offset() >= ends[msg.partition()] - 1:
                            todo.discard(msg.partition())
        finally:
            reader.close()
        for tp in partitions:
            stores[tp.partition].expire()
            self.parts[tp.partition] = self.new_partition(tp.offset if tp.offset >= 0 else None,
                                                          stores[tp.partition])

    def new_partition(self, next_offset: int | None, store: PartitionJoinStore | None = None) -> LabelPartition:
        """The label state of one input partition (an empty join store unless one was restored)."""
        ttl_ms = int(self.settings.max_label_delay_seconds * 1000)
        part = LabelPartition(store or PartitionJoinStore(ttl_ms, self.settings.max_join_entries))
        part.next_offset = next_offset
        return part

    def revoke(self, partitions: list[int]) -> None:
        for p in partitions:
            self.parts.pop(p, None)

    def remember(self, partition: int, predictions: list[Prediction]) -> None:
        part = self.parts.get(partition)
        if part is None:
            return
        outputs = column(predictions, "prediction")
        rows = zip(column(predictions, "model_id"), column(predictions, "model_version"), column(predictions, "ts_ms"),
                   as_labels(column(outputs, "label")), column(outputs, "score"), column(outputs, "value"),
                   map(segment_pairs, column(predictions, "segments")), strict=True)
        entries = dict(zip(column(predictions, "prediction_id"), rows, strict=True))
        part.store.put_many(entries)
        part.puts.update(entries)

    def receive(self, msgs: list[Message], dead_letter: Callable[[Message, InvalidRecord], None]) -> None:
        """Join a batch of new labels; those whose prediction is not there yet wait for `retry`."""
        now = time.monotonic()
        now_ms = int(self.clock() * 1000)
        fresh: dict[int, list[tuple[int, Label, float]]] = defaultdict(list)
        for msg in msgs:
            part = self.parts.get(msg.partition())
            if part is None:
                continue
            part.next_offset = msg.offset() + 1
            try:
                label = read_label(msg, self.event_times, now_ms)
            except InvalidRecord as exc:
                dead_letter(msg, exc)
                continue
            fresh[msg.partition()].append((msg.offset(), label, now))
        for partition, labels in fresh.items():
            part = self.parts[partition]
            latest = max(label.ts_ms for _, label, _ in labels)
            part.read_to_ms = latest if part.read_to_ms is None else max(part.read_to_ms, latest)
            part.waiting += self._join(part, labels, now)

    def retry(self, read_to: Mapping[int, int | None], patient: set[int] | None = None) -> None:
        """Try the waiting labels again (once per checkpoint, not per batch); count those that waited too long.

        ``read_to`` holds each predictions partition's event time read so far (None: nothing yet; absent: not
        assigned here): a label waits at least until its partition's predictions are read up to its own event
        time. Labels of the ``patient`` partitions never time out: their predictions partition is held back
        (waiting for a reference), so their predictions are still to be read.
        """
        now = time.monotonic()
        for partition, part in self.parts.items():
            if part.waiting:
                behind: Callable[[int], bool] = (lambda _ts: False) if partition not in read_to else (
                    lambda ts, at=read_to[partition]: at is None or at < ts)  # type: ignore[misc]
                part.waiting = self._join(part, part.waiting, now, behind, patient is not None and partition in patient)

    def crowded(self) -> tuple[list[int], list[int]]:
        """Label partitions to pause (``MAX_WAITING`` labels wait) and paused ones to resume (half of it left)."""
        pause, resume = [], []
        for partition, part in self.parts.items():
            if not part.paused and len(part.waiting) >= MAX_WAITING:
                part.paused = True
                pause.append(partition)
            elif part.paused and len(part.waiting) < MAX_WAITING // 2:
                part.paused = False
                resume.append(partition)
        return pause, resume

    def _join(self, part: LabelPartition, labels: list[tuple[int, Label, float]], now: float,
              behind: Callable[[int], bool] = lambda _ts: False, patient: bool = False
              ) -> list[tuple[int, Label, float]]:
        """Fold the labels whose prediction is known; return those still waiting for theirs."""
        still: list[tuple[int, Label, float]] = []
        matched: dict[DeltaKey, list[tuple[int, JoinEntry, Label]]] = defaultdict(list)
        for offset, label, seen in labels:
            entry = part.store.pop(label.prediction_id)
            if entry is not None:
                start = self.shape(entry.model_id, entry.model_version).start_of(entry.ts_ms)
                matched[(entry.model_id, entry.model_version, start)].append((offset, entry, label))
                part.joined.append(label.prediction_id)
            elif patient or now - seen < self.settings.label_wait_seconds or behind(label.ts_ms):
                still.append((offset, label, seen))
            else:
                key = (label.model_id, self.shape(label.model_id, "").start_of(label.ts_ms))
                part.unmatched.setdefault(key, []).append(offset)
                metrics.LABELS_UNMATCHED.inc()
        for key, rows in matched.items():
            self._fold(part, key, rows)
        return still

    def _fold(self, part: LabelPartition, key: DeltaKey, rows: list[tuple[int, JoinEntry, Label]]) -> None:
        delta = part.deltas.get(key)
        if delta is None:
            delta = part.deltas[key] = LabelDelta(self.new_summary(*key), rows[0][0])
        delta.first_offset = min(delta.first_offset, min(r[0] for r in rows))
        delta.last_offset = max(delta.last_offset, max(r[0] for r in rows))
        entries = [r[1] for r in rows]
        truths = [r[2].label for r in rows]
        of_rows = [dict(e.segments) if e.segments else {} for e in entries]
        segments = {s: [r.get(s) for r in of_rows] for s in sorted(set().union(*of_rows))} or None
        if all(e.value is not None for e in entries) and all(type(t) in (int, float) for t in truths):
            predicted = np.array([e.value for e in entries], dtype=np.float64)
            true = np.array(truths, dtype=np.float64)
            delta.labeled += len(rows)
            delta.abs_err += float(np.abs(predicted - true).sum())
            delta.sq_err += float(((predicted - true) ** 2).sum())
            if delta.summary.regression is not None:
                delta.summary.add_labels(values=predicted, true_values=true, segments=segments)
            return
        names = [as_label(t) for t in truths]
        delta.labeled += len(rows)
        delta.correct += sum(e.label == n for e, n in zip(entries, names, strict=True))
        if delta.summary.classifier is not None:
            scores = [e.score for e in entries]
            delta.summary.add_labels(
                labels=names, predicted=[e.label for e in entries],
                scores=np.array([np.nan if s is None else s for s in scores], dtype=np.float64)
                if any(s is not None for s in scores) else None, segments=segments)

    def flush(self, producer: Producer, sink: str, n_sink: int, track: Callable[[], Any]) -> None:
        """Emit label summaries and unmatched counts, and the join-state changelog records."""
        for partition, part in self.parts.items():
            part.store.expire((part.read_to_ms or 0) if part.labels_left else None)
            if part.puts or part.joined:
                for block in changelog_blocks(part.puts, part.joined):
                    producer.produce(self.join_topic, partition=partition, value=block, on_delivery=track())
                part.puts, part.joined = {}, []
            for (model_id, version, start), d in sorted(part.deltas.items()):
                spec = self.shape(model_id, version)
                header = envelope.LabelHeader(model_id, version, start, spec.size_ms, spec.lateness_ms, partition,
                                              d.first_offset, d.last_offset, d.labeled, d.correct, d.abs_err,
                                              d.sq_err, 0)
                producer.produce(sink, key=model_id.encode(), value=envelope.encode(header, d.summary.to_bytes()),
                                 on_delivery=track())
            part.deltas = {}
            for (model_id, start), offsets in sorted(part.unmatched.items()):
                spec = self.shape(model_id, "")
                header = envelope.LabelHeader(model_id, "", start, spec.size_ms, spec.lateness_ms, partition,
                                              min(offsets), max(offsets), 0, 0, 0.0, 0.0, len(offsets))
                producer.produce(sink, key=model_id.encode(), value=envelope.encode(header), on_delivery=track())
            part.unmatched = {}
        metrics.JOIN_STORE_ENTRIES.set(sum(len(part.store.entries) for part in self.parts.values()))
        metrics.PACED_PARTITIONS.labels(topic="labels").set(sum(part.paused for part in self.parts.values()))

    def commit_offsets(self) -> list[TopicPartition]:
        out = []
        for partition, part in self.parts.items():
            if part.waiting:
                out.append(TopicPartition(self.topic, partition, min(o for o, _, _ in part.waiting)))
            elif part.next_offset is not None:
                out.append(TopicPartition(self.topic, partition, part.next_offset))
        return out
