"""The summarize stage: consume predictions in batches, validate, window by event time per partition, emit summaries.

One confluent-kafka consumer reads whole batches (``consume(num_messages=...)``), not one await per
event; faust's per-event stream machinery is kept off this hot path (see BENCHMARKS.md).
Offsets are committed only up to the oldest open window, after the summaries and dead letters before
them are delivered, so a crash re-reads and rebuilds the open windows: at-least-once plus deterministic
window identity gives exact results downstream. A partition that reaches the windows an automatic
reference will apply to before the reference exists is paused until it does (``streams.reference_wait``).
Beside the windows, each partition routes the same records into ticks (``streams.pipeline.ticks``), short
windows with their own lateness that the sequential detectors read; the commit stays behind the oldest open
window or tick, whichever began earlier.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from confluent_kafka import OFFSET_INVALID, Consumer, Message, Producer, TopicPartition

from driftline.errors import TopicError
from driftline.streams import metrics
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import kafka_io, topics
from driftline.streams.pipeline import envelope
from driftline.streams.pipeline.decode import BadEventTime, EventTimeBounds, InvalidRecord, Prediction, column
from driftline.streams.pipeline.model_slots import ModelLimitReached, ModelSlots
from driftline.streams.pipeline.records import partition_mismatch, read_prediction
from driftline.streams.pipeline.summarize import BuiltColumns, FeatureColumns
from driftline.streams.pipeline.ticks import TickSummarizer, TickSummary
from driftline.streams.pipeline.windows import ClosedWindow, PartitionWindows, PinnedSpecs, SpecOf, fixed_shape
from driftline.streams.references.book import Reference
from driftline.streams.references.topic import ReferenceFollower
from driftline.streams.references.wait import Hold, PartitionReferenceWait
from driftline.streams.stages import join_pacing
from driftline.streams.stages.consumer import ConsumerStage, records
from driftline.streams.stages.label_join import LabelJoiner

log = logging.getLogger("driftline.summarize")
A = TypeVar("A")


class Summarizer(Protocol[A]):
    """How the summarize stage folds predictions into a mergeable window summary."""

    def new(self, model_id: str, model_version: str, window_start_ms: int) -> A: ...

    def add(self, acc: A, predictions: list[Prediction], rows: list[int] | None = None) -> FeatureColumns | None:
        """Fold predictions in; may return their feature columns (``rows``: their batch positions) for the ticks."""

    def to_bytes(self, acc: A) -> bytes: ...


@dataclass(slots=True)
class _PartitionState(Generic[A]):
    windows: PartitionWindows[A]
    wait: PartitionReferenceWait
    ticks: PartitionWindows[TickSummary] | None = None
    last_record_wall: float = field(default_factory=time.monotonic)
    held: list[Message] = field(default_factory=list)
    paced: bool = False  # paused: far ahead of its labels (`join_pacing`)


class SummarizeStage(ConsumerStage, Generic[A]):
    def __init__(self, settings: Settings, summarizer: Summarizer[A], stop: threading.Event,
                 references: ReferenceFollower | None = None, clock: Callable[[], float] = time.time,
                 shape: SpecOf | None = None,
                 awaited: Callable[[str, str], int | None] | None = None,
                 ticks: tuple[TickSummarizer, SpecOf] | None = None) -> None:
        super().__init__(kafka_io.consumer(settings, f"{settings.consumer_group}-stage1"), stop,
                         references, settings.batch_max_records)
        self.settings = settings
        self.summarizer = summarizer
        self.clock = clock
        self.source = settings.topic(topics.PREDICTIONS)
        self.sink = settings.topic(topics.SUMMARIES)
        self.dlq = settings.topic(topics.DLQ)
        self.labels = settings.topic(topics.LABELS)
        self.shape = PinnedSpecs(shape or fixed_shape(settings.window_seconds * 1000,
                                                  int(settings.allowed_lateness_seconds * 1000)))
        self.joiner = LabelJoiner(settings, summarizer.new, self.shape, clock)  # type: ignore[arg-type]
        self.event_times = EventTimeBounds.of(settings)
        self.awaited = awaited or (lambda _model_id, _model_version: None)
        self.slots = ModelSlots(settings.max_models)
        self.slots_warned = False  # the first refusal is a warning, the rest debug lines (a flood is one event)
        self.ticks = None if ticks is None else (ticks[0], PinnedSpecs(ticks[1], "ticks"))
        self.parts: dict[int, _PartitionState[A]] = {}
        self.n_source_partitions = 0
        self.n_sink_partitions = 0
        self.ledger = kafka_io.DeliveryLedger()
        self.producer: Producer = kafka_io.producer(settings)

    def subscriptions(self) -> list[str]:
        return [self.source, self.labels]

    def references_read(self, refs: list[Reference]) -> None:
        """The summarizer reads the book when it opens a window; partitions held for a reference resume."""
        self._release_held()

    def close(self) -> None:
        self.producer.flush(30)
        ready = self.ledger.ready()
        if ready:
            kafka_io.commit(self.consumer, ready)
        super().close()

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        meta = consumer.list_topics(self.source, timeout=10).topics[self.source]
        self.n_source_partitions = len(meta.partitions)
        sink_meta = consumer.list_topics(self.sink, timeout=10).topics[self.sink]
        self.n_sink_partitions = len(sink_meta.partitions)
        committed = consumer.committed(assigned, timeout=30)
        label_parts = [tp for tp in committed if tp.topic == self.labels]
        if label_parts:
            n_labels = len(consumer.list_topics(self.labels, timeout=10).topics[self.labels].partitions)
            problem = partition_mismatch(self.labels, n_labels, self.source, self.n_source_partitions)
            if problem is not None:
                raise TopicError(problem)
            self.joiner.assign(label_parts)
        committed = [tp for tp in committed if tp.topic == self.source]
        for tp in committed:
            windows: PartitionWindows[A] = PartitionWindows(tp.partition, self.shape, self.summarizer.new,
                                                            *self.settings.event_time_jump())
            windows.max_event_ms = kafka_io.restored_max_event_ms(tp)
            if tp.offset != OFFSET_INVALID:
                windows.next_offset = tp.offset
            ticks = None
            if self.ticks is not None:
                ticks = PartitionWindows(tp.partition, self.ticks[1], self.ticks[0].new,
                                         *self.settings.event_time_jump())
                ticks.max_event_ms, ticks.next_offset = windows.max_event_ms, windows.next_offset
            wait = PartitionReferenceWait(self.awaited, self.shape, kafka_io.restored_warm_up(tp))
            self.parts[tp.partition] = _PartitionState(windows, wait, ticks)
        log.info("summarize stage assigned %s", sorted(tp.partition for tp in assigned))

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._checkpoint(only={tp.partition for tp in revoked})
        paused = [tp for tp in revoked if tp.topic == self.source and tp.partition in self.parts
                  and (self.parts[tp.partition].held or self.parts[tp.partition].paced)]
        paused += [tp for tp in revoked if tp.topic == self.labels and tp.partition in self.joiner.parts
                   and self.joiner.parts[tp.partition].paused]
        if paused:  # their records are re-read from the committed offset (at or before the held ones)
            consumer.resume(paused)
        for tp in revoked:
            if tp.topic == self.source:
                self.parts.pop(tp.partition, None)
        self.joiner.revoke([tp.partition for tp in revoked if tp.topic == self.labels])
        log.info("summarize stage revoked %s", sorted(tp.partition for tp in revoked))

    def _on_lost(self, consumer: Consumer, lost: list[TopicPartition]) -> None:
        self.ledger.forget(self.source, {tp.partition for tp in lost if tp.topic == self.source})
        self.ledger.forget(self.labels, {tp.partition for tp in lost if tp.topic == self.labels})
        for tp in lost:
            if tp.topic == self.source:
                self.parts.pop(tp.partition, None)
        self.joiner.revoke([tp.partition for tp in lost if tp.topic == self.labels])

    def _process(self, batch: list[Message]) -> None:
        by_partition: dict[int, list[Message]] = defaultdict(list)
        labels: list[Message] = []
        for msg in records(batch):
            if msg.topic() == self.labels:
                labels.append(msg)
            else:
                by_partition[msg.partition()].append(msg)
        now = time.monotonic()
        self._release_held()
        for partition, msgs in by_partition.items():
            state = self.parts.get(partition)
            if state is None:
                continue
            state.last_record_wall = now
            if state.held:  # fetched before the pause took effect: they queue behind the held records
                state.held += msgs
            else:
                self._summarize(partition, state, msgs)
        if labels:
            self.joiner.receive(labels, self._dead_letter)
            join_pacing.pace_labels(self.consumer, self.labels, self.joiner)
        self.producer.poll(0)

    def _pace_predictions(self) -> None:
        """Pause predictions partitions far ahead of their labels; resume them once those caught up (join_pacing)."""
        delay_ms = int(self.settings.max_label_delay_seconds * 1000)
        for partition, state in self.parts.items():
            part = self.joiner.parts.get(partition)
            if part is None:
                continue
            left = join_pacing.labels_left(self.consumer, self.labels, partition, part)
            part.labels_left = left is not False  # unknown: expire nothing, pause nothing (join_pacing)
            ahead = join_pacing.predictions_ahead(state.windows.event_time_ms, part.read_to_ms, left is True,
                                                  delay_ms, state.paced)
            if ahead != state.paced:
                state.paced = ahead
                if not state.held:  # a held partition stays paused; its release resumes it unless paced
                    (self.consumer.pause if ahead else self.consumer.resume)([TopicPartition(self.source, partition)])
        metrics.PACED_PARTITIONS.labels(topic="predictions").set(sum(s.paced for s in self.parts.values()))

    def _summarize(self, partition: int, state: _PartitionState[A], msgs: list[Message]) -> None:
        """Decode one partition's records, route them to windows, fold each window's share in at once."""
        preds: list[Prediction] = []
        offsets: list[int] = []
        positions: list[int] = []
        invalid: list[tuple[int, InvalidRecord]] = []
        now_ms = int(self.clock() * 1000)
        for position, msg in enumerate(msgs):
            try:
                pred = read_prediction(msg, self.event_times, now_ms)
                self.slots.check(pred.model_id, pred.model_version)
            except InvalidRecord as exc:
                invalid.append((position, exc))
                continue
            preds.append(pred)
            offsets.append(msg.offset())
            positions.append(position)
        end = len(msgs)
        held = state.wait.first_held(state.windows, column(preds, "model_id"),
                                     column(preds, "model_version"), column(preds, "ts_ms")) if preds else None
        if held is not None:
            cut = held[0]
            end = positions[cut]
            held_ts_ms = preds[cut].ts_ms
            preds, offsets = preds[:cut], offsets[:cut]
        for position, problem in invalid:
            if position < end:
                self._dead_letter(msgs[position], problem)
        if preds:
            routed = state.windows.assign_many(column(preds, "model_id"), column(preds, "model_version"),
                                               column(preds, "ts_ms"), offsets)
            added = 0
            built = BuiltColumns(len(preds))
            for window, rows in routed:
                columns = self.summarizer.add(window.acc, [preds[i] for i in rows], rows)
                if columns is not None:
                    built.add(columns)
                self.slots.routed(*window.key[:2], window.key[2] + window.spec.size_ms + window.spec.lateness_ms)
                added += len(rows)
            late = len(preds) - added
            if late:
                metrics.LATE_EVENTS.inc(late)
            metrics.EVENTS.labels(stage="summarize").inc(added)
            self.joiner.remember(partition, preds)
            if state.ticks is not None and self.ticks is not None:
                for tick, rows in state.ticks.assign_many(column(preds, "model_id"), column(preds, "model_version"),
                                                          column(preds, "ts_ms"), offsets):
                    self.ticks[0].add(tick.acc, [preds[i] for i in rows], built.for_rows(rows))
                    self.slots.routed(*tick.key[:2], tick.key[2] + tick.spec.size_ms + tick.spec.lateness_ms)
        state.windows.next_offset = msgs[end - 1].offset() + 1 if end else msgs[0].offset()
        if state.ticks is not None:
            state.ticks.next_offset = state.windows.next_offset
        if held is not None:
            self._hold(partition, state, msgs[end:], held[1], held_ts_ms)

    def _hold(self, partition: int, state: _PartitionState[A], held: list[Message], model: tuple[str, str],
              ts_ms: int) -> None:
        """Stop reading the partition until ``model``'s automatic reference is known (see reference_wait)."""
        self.consumer.pause([TopicPartition(self.source, partition)])
        state.held = held
        state.wait.hold = Hold(model, ts_ms, time.monotonic())
        # nothing is read between the records before and the held one, so this judges no record differently
        state.windows.advance_to(ts_ms - 1)
        if state.ticks is not None:
            state.ticks.advance_to(ts_ms - 1)
        log.info("partition %s waits for the automatic reference of %s/%s (windows from %d on)", partition,
                 *model, ts_ms)

    def _release_held(self) -> None:
        """Resume the held partitions whose reference is known, or that waited ``reference_wait_seconds``."""
        now = time.monotonic()
        for partition, state in self.parts.items():
            done, timed_out = state.wait.due(now, self.settings.reference_wait_seconds)
            if not done:
                continue
            assert state.wait.hold is not None
            if timed_out:
                log.warning("partition %s: no automatic reference of %s/%s after %.0f s; summarising on in "
                            "discovery mode", partition, *state.wait.hold.model, self.settings.reference_wait_seconds)
            metrics.REFERENCE_WAITS.labels(outcome="timed_out" if timed_out else "reference").inc()
            held, state.held = state.held, []
            state.wait.release(timed_out)
            if not state.paced:
                self.consumer.resume([TopicPartition(self.source, partition)])
            state.last_record_wall = now
            self._summarize(partition, state, held)

    def _dead_letter(self, msg: Message, problem: InvalidRecord) -> None:
        metrics.DEAD_LETTERS.inc()
        if isinstance(problem, BadEventTime):
            metrics.REJECTED_EVENT_TIMES.labels(reason=problem.kind).inc()
        elif isinstance(problem, ModelLimitReached):
            if not self.slots_warned:
                log.warning("%s (further ones are logged at debug level)", problem)
                self.slots_warned = True
            metrics.DROPPED_MODELS.inc()
        reason = str(problem)
        log.log(logging.DEBUG if isinstance(problem, ModelLimitReached) else logging.INFO, "dead letter %s/%s/%s: %s",
                msg.topic(), msg.partition(), msg.offset(), reason)
        kafka_io.dead_letter(self.producer, self.dlq, value=msg.value(), key=msg.key(), reason=reason,
                             source_topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                             on_delivery=self.ledger.callback())

    def _advance_idle(self) -> None:
        """Let wall-clock time close windows of partitions that are caught up and quiet."""
        now_wall = time.monotonic()
        now_ms = int(self.clock() * 1000)
        for partition, state in self.parts.items():
            if state.held or now_wall - state.last_record_wall < self.settings.idle_partition_seconds:
                continue
            tp = TopicPartition(self.source, partition)
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                position = self.consumer.position([tp])[0].offset
            except Exception as exc:
                log.debug("idle check failed on %s: %s", partition, exc)
                # an unreachable partition is not a quiet one: producers hold its records meanwhile, so its
                # quiet time starts again once it answers (a broker back from an outage, a new leader)
                state.last_record_wall = now_wall
                continue
            caught_up = high == 0 or (position >= 0 and position >= high) or (
                position < 0 and state.windows.next_offset is not None and state.windows.next_offset >= high)
            if caught_up:
                state.windows.advance_to(now_ms)
                if state.ticks is not None:
                    state.ticks.advance_to(now_ms)

    def _emit(self, closed: ClosedWindow[A]) -> None:
        model_id, model_version, start = closed.key
        n = getattr(closed.acc, "n", 0)
        header = envelope.SummaryHeader(model_id, model_version, start, closed.spec.size_ms, closed.spec.lateness_ms,
                                        closed.partition, self.n_source_partitions, closed.first_offset,
                                        closed.last_offset, int(n), closed.late_events, closed.late_oldest_ms)
        self.producer.produce(self.sink, key=model_id.encode(), value=envelope.encode(header,
                              self.summarizer.to_bytes(closed.acc)), on_delivery=self.ledger.callback())
        metrics.WINDOWS_EMITTED.inc()

    def _emit_tick(self, closed: ClosedWindow[TickSummary]) -> None:
        if not closed.acc.active or closed.acc.n == 0:
            return
        model_id, model_version, start = closed.key
        header = envelope.TickHeader(model_id, model_version, start, closed.spec.size_ms, closed.spec.lateness_ms,
                                     closed.partition, self.n_source_partitions, closed.first_offset,
                                     closed.last_offset, closed.acc.n)
        self.producer.produce(self.sink, key=model_id.encode(), value=envelope.encode(header, closed.acc.to_bytes()),
                              on_delivery=self.ledger.callback())

    def _checkpoint(self, only: set[int] | None = None) -> None:
        """Emit closed windows and watermarks; commit the offsets whose preceding records are delivered.

        A regular checkpoint does not stop to flush: its offsets are committed at a later checkpoint, once
        delivered (see ``kafka_io.DeliveryLedger``). Before partitions are revoked everything is flushed and
        committed at once.
        """
        if not self.parts and not self.joiner.parts:
            return
        self._release_held()
        self.joiner.retry({p: state.windows.event_time_ms for p, state in self.parts.items()},
                          patient={p for p, state in self.parts.items() if state.held})
        join_pacing.pace_labels(self.consumer, self.labels, self.joiner)
        self._pace_predictions()
        self.joiner.flush(self.producer, self.sink, self.n_sink_partitions, self.ledger.callback)
        self._advance_idle()
        for partition in sorted(self.parts):
            windows = self.parts[partition].windows
            for closed in windows.close_ready():
                self._emit(closed)
            ticks = self.parts[partition].ticks
            if ticks is not None:
                for closed_tick in ticks.close_ready():
                    self._emit_tick(closed_tick)
            now = windows.event_time_ms
            if now is not None:
                value = envelope.encode(envelope.Watermark(partition, self.n_source_partitions, now))
                for sink_partition in range(self.n_sink_partitions):
                    self.producer.produce(self.sink, value=value, partition=sink_partition,
                                          on_delivery=self.ledger.callback())
        times = [t for t in (state.windows.event_time_ms for state in self.parts.values()) if t is not None]
        self.slots.release(min(times) if times else None)
        offsets = []
        for partition, state in self.parts.items():
            if only is not None and partition not in only:
                continue
            points = [p for p in (state.windows.commit_point(),
                                  state.ticks.commit_point() if state.ticks is not None else None) if p is not None]
            point = min(points, key=lambda p: p[0]) if points else None
            if point is not None:
                offset, max_event_ms = point
                offsets.append(TopicPartition(self.source, partition, offset,
                                              metadata=kafka_io.commit_metadata(max_event_ms,
                                                                                state.wait.warm_up())))
        offsets += [tp for tp in self.joiner.commit_offsets() if only is None or tp.partition in only]
        self.ledger.seal(offsets)
        if only is None:
            self.producer.poll(0)
        elif self.producer.flush(30):
            raise kafka_io.DeliveryFailed("records still undelivered after 30 s; not committing")
        ready = self.ledger.ready()
        if ready:
            kafka_io.commit(self.consumer, ready)
