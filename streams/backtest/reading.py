"""Reading a retained range of Kafka for the backtest, without disturbing the live workers.

Isolation: both topics are read with ``assign()`` (no group membership, no rebalance of the live workers)
under a fresh group id, with commits and offset storage off; nothing is produced to Kafka and the
join-state changelog is not read.

Range: ``[start_ms, end_ms)`` in *event time* (the ``ts`` field). Partitions are positioned by Kafka record
timestamp (``offsets_for_times``), from ``start_ms - SEEK_SLACK_MS`` up to the first record stamped after
``end_ms`` + the largest allowed lateness + ``SEEK_SLACK_MS`` (or the end of the partition when the run
started); records whose event time falls outside the range are skipped. Windows at the range's edges hold
only the records inside it: give window-aligned times to replay whole windows.

Interleaving: records are fetched into per-partition buffers (at most about ``BUFFER_LIMIT`` each; a
partition ahead is paused) and handed to the replay in event-time order across partitions (each
partition's own order kept), stopping whenever a partition still being read has nothing buffered. So the
replay does not depend on how Kafka happens to batch the fetches: the same range and configuration give
the same report every time. Records are validated as live (`records.read_prediction`).

Labels: the labels topic is read after the predictions, for labels whose event time is in
``[start_ms, end_ms + max_label_delay]`` (positioned the same way, and capped by the partitions' ends when
the run started), and handed to the label joiner, whose join store holds every replayed prediction.
"""

from __future__ import annotations

import heapq
import logging
import sys
import time
from abc import ABC, abstractmethod
from collections import defaultdict, deque

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from driftline.errors import BacktestError, BrokerError
from driftline.streams.backtest.report import BacktestReport
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import topics
from driftline.streams.kafka.boundary import KAFKA_LOG
from driftline.streams.kafka.security import client_config
from driftline.streams.pipeline.decode import EventTimeBounds, InvalidRecord, Prediction, decode_label
from driftline.streams.pipeline.join_store import PartitionJoinStore
from driftline.streams.pipeline.records import partition_mismatch, read_prediction
from driftline.streams.references.book import ReferenceBook
from driftline.streams.references.topic import ReferenceFollower
from driftline.streams.stages.label_join import LabelJoiner

log = logging.getLogger("driftline.backtest")
SEEK_SLACK_MS = 60_000
STALL_TIMEOUT_S = 60.0
BATCH = 5000
BUFFER_LIMIT = 20_000

# (event time, offset, the prediction; None for another model's, which only moves the partition's event time)
Entry = tuple[int, int, Prediction | None]


def read_references(settings: Settings, timeout: float = 30.0) -> ReferenceBook:
    """Every published reference, read without creating the topic when it does not exist."""
    book = ReferenceBook()
    admin = AdminClient(client_config(settings, {"logger": KAFKA_LOG}))
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BacktestError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    if settings.topic(topics.REFERENCES) in existing:
        follower = ReferenceFollower(settings, book)
        try:
            follower.catch_up(timeout)
        except BrokerError as exc:
            raise BacktestError(str(exc)) from exc
        finally:
            follower.close()
    return book


class RangeReader(ABC):
    """Reads the range's predictions and labels; the replay (a subclass) says what to do with each record.

    ``step_ms``: the replay closes windows each time event time crosses a multiple of it.
    ``max_lateness_ms``: how far past the range's end a window of it may still take records.
    """

    def __init__(self, settings: Settings, report: BacktestReport, model: str | None, joiner: LabelJoiner,
                 step_ms: int, max_lateness_ms: int) -> None:
        self.settings = settings
        self.report = report
        self.model = model
        self.joiner = joiner
        self.step_ms = step_ms
        self.max_lateness_ms = max_lateness_ms
        self.topic = settings.topic(topics.PREDICTIONS)
        self.label_topic = settings.topic(topics.LABELS)
        self.event_times = EventTimeBounds.of(settings)
        self.n_partitions = 0
        self.label_end_ms = report.labels_to_ms = report.end_ms + int(settings.max_label_delay_seconds * 1000)

    @abstractmethod
    def _replay(self, partition: int, entry: Entry) -> None:
        """Replay one record of ``partition``, in event-time order across partitions."""

    @abstractmethod
    def _close_ready(self, live: set[int]) -> None:
        """Close what the event times of the partitions still being read have passed."""

    @abstractmethod
    def _finish(self, done: list[int], live: set[int]) -> None:
        """Partitions ``done`` are at the end of their range: take them out of ``live``, close their windows."""

    def read(self) -> None:
        """Replay the range's predictions, then hand its labels to the joiner."""
        consumer = Consumer(client_config(self.settings, {
            "group.id": self.report.group_id, "logger": KAFKA_LOG,
            "enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": True,
            "auto.offset.reset": "earliest", "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 4_194_304,
        }))
        try:
            bounds = self._bounds(consumer)
            label_bounds = self._label_bounds(consumer)  # the labels' ends as the run starts, too
            self.report.partitions, self.report.label_partitions = bounds, label_bounds
            live = {p for p, (a, b) in bounds.items() if a < b}
            consumer.assign([TopicPartition(self.topic, p, bounds[p][0]) for p in sorted(live)])
            self._read(consumer, bounds, live)
            self._read_labels(consumer, label_bounds)
        finally:
            consumer.close()
    def _bounds(self, consumer: Consumer) -> dict[int, tuple[int, int]]:
        """Per partition, the offsets [from, to) that can hold the range's records."""
        try:
            meta = consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
        except KafkaException as exc:
            raise BacktestError(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc}") from exc
        if meta is None or meta.error is not None or not meta.partitions:
            raise BacktestError(f"topic {self.topic} does not exist on {self.settings.kafka_bootstrap}")
        parts = sorted(meta.partitions)
        self.n_partitions = len(parts)
        return self._offsets(consumer, self.topic, parts, self.report.start_ms,
                             self.report.end_ms + self.max_lateness_ms)

    def _label_bounds(self, consumer: Consumer) -> dict[int, tuple[int, int]]:
        """Per labels partition, the offsets that can hold labels stamped in ``[from, to + max label delay]``.

        No labels topic: nothing to join (it is not created). Its partitions must match the predictions',
        as the live worker requires, since partition p of the labels only ever meets partition p's predictions.
        """
        try:
            meta = consumer.list_topics(timeout=30).topics.get(self.label_topic)
        except KafkaException as exc:
            raise BacktestError(f"cannot reach Kafka at {self.settings.kafka_bootstrap}: {exc}") from exc
        if meta is None or meta.error is not None or not meta.partitions:
            return {}
        problem = partition_mismatch(self.label_topic, len(meta.partitions), self.topic, self.n_partitions)
        if problem is not None:
            raise BacktestError(problem)
        ttl_ms = int(self.settings.max_label_delay_seconds * 1000)
        for p in meta.partitions:
            self.joiner.parts[p] = self.joiner.new_partition(None, PartitionJoinStore(ttl_ms, sys.maxsize))
        return self._offsets(consumer, self.label_topic, sorted(meta.partitions), self.report.start_ms,
                             self.label_end_ms)

    def _offsets(self, consumer: Consumer, topic: str, parts: list[int], first_ms: int,
                 last_ms: int) -> dict[int, tuple[int, int]]:
        """Per partition, from the first record stamped at ``first_ms`` - slack to the first stamped after
        ``last_ms`` + slack, or to the partition's end now."""
        first_ms, last_ms = max(0, first_ms - SEEK_SLACK_MS), last_ms + SEEK_SLACK_MS
        firsts = consumer.offsets_for_times([TopicPartition(topic, p, first_ms) for p in parts], timeout=30)
        lasts = consumer.offsets_for_times([TopicPartition(topic, p, last_ms) for p in parts], timeout=30)
        bounds = {}
        for p, first, after in zip(parts, firsts, lasts, strict=True):
            for tp in (first, after):
                if tp.error is not None:
                    raise BacktestError(f"cannot look up offsets of {topic}[{p}]: {tp.error}")
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            begin = first.offset if first.offset >= 0 else high
            end = after.offset if 0 <= after.offset <= high else high
            bounds[p] = (begin, max(begin, end))
        return bounds

    def _read(self, consumer: Consumer, bounds: dict[int, tuple[int, int]], live: set[int]) -> None:
        buffers: dict[int, deque[Entry]] = {p: deque() for p in live}
        fetched: set[int] = set()  # partitions read to the end of their range
        paused: set[int] = set()
        last_progress = time.monotonic()
        horizon: int | None = None
        while live:
            batch = consumer.consume(BATCH, timeout=0.1)
            if batch:
                last_progress = time.monotonic()
                self._fetch(batch, bounds, buffers, fetched)
            elif reading := [TopicPartition(self.topic, p) for p in live - fetched]:
                ended = {tp.partition for tp in consumer.position(reading) if tp.offset >= bounds[tp.partition][1]}
                fetched |= ended
                if not ended and time.monotonic() - last_progress > STALL_TIMEOUT_S:
                    raise BacktestError(f"no progress reading {self.topic} partitions "
                                        f"{sorted(live - fetched)} for {STALL_TIMEOUT_S:.0f} s")
            horizon = self._drain(buffers, fetched, live, horizon)
            # stop fetching past a partition's range, and ahead of what the replay can use
            behind = live - fetched
            stop = (fetched | {p for p in behind if len(buffers[p]) > BUFFER_LIMIT}) - paused
            if stop:
                consumer.pause([TopicPartition(self.topic, p) for p in sorted(stop)])
            go = {p for p in paused & behind if len(buffers[p]) < BUFFER_LIMIT // 2}
            if go:
                consumer.resume([TopicPartition(self.topic, p) for p in sorted(go)])
            paused = (paused | stop) - go

    def _fetch(self, batch: list[Message], bounds: dict[int, tuple[int, int]], buffers: dict[int, deque[Entry]],
               fetched: set[int]) -> None:
        """Decode a batch into the partitions' buffers; invalid and out-of-range records are only counted.

        The range's predictions (late ones too, as live) go to the label join store.
        """
        report = self.report
        remember: dict[int, list[Prediction]] = defaultdict(list)
        now_ms = int(time.time() * 1000)
        for msg in batch:
            partition = msg.partition()
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    fetched.add(partition)
                else:
                    log.warning("consume error: %s", err)
                continue
            offset = msg.offset()
            if partition in fetched or offset >= bounds[partition][1]:
                fetched.add(partition)
                continue
            if offset >= bounds[partition][1] - 1:
                fetched.add(partition)
            report.records_read += 1
            try:
                pred = read_prediction(msg, self.event_times, now_ms)
            except InvalidRecord:
                report.invalid += 1
                continue
            if not report.start_ms <= pred.ts_ms < report.end_ms:
                report.out_of_range += 1
                continue
            if self.model is not None and pred.model_id != self.model:
                report.other_models += 1
                buffers[partition].append((pred.ts_ms, offset, None))
            else:
                buffers[partition].append((pred.ts_ms, offset, pred))
                remember[partition].append(pred)
        for partition, preds in remember.items():
            self.joiner.remember(partition, preds)

    def _drain(self, buffers: dict[int, deque[Entry]], fetched: set[int], live: set[int],
               horizon: int | None) -> int | None:
        """Replay buffered records in event-time order while every partition still being read has some."""
        done = [p for p in live if p in fetched and not buffers[p]]
        if done:
            self._finish(done, live)
        if any(not buffers[p] for p in live):
            return horizon
        heads = [(buffers[p][0][0], p) for p in live]
        heapq.heapify(heads)
        while heads:
            ts, partition = heapq.heappop(heads)
            if horizon is None or ts >= horizon:
                if horizon is not None:
                    self._close_ready(live)
                horizon = ts - ts % self.step_ms + self.step_ms
            buffer = buffers[partition]
            self._replay(partition, buffer.popleft())
            if buffer:
                heapq.heappush(heads, (buffer[0][0], partition))
            elif partition in fetched:
                self._finish([partition], live)
            else:
                break  # the replay cannot go on without this partition's next records
        return horizon

    def _read_labels(self, consumer: Consumer, bounds: dict[int, tuple[int, int]]) -> None:
        """Join the labels of ``bounds`` with the replayed predictions (the join store holds all of them)."""
        todo = {p for p, (a, b) in bounds.items() if a < b}
        if not todo:
            return
        consumer.assign([TopicPartition(self.label_topic, p, bounds[p][0]) for p in sorted(todo)])
        last_progress = time.monotonic()
        while todo:
            batch = consumer.consume(BATCH, timeout=0.1)
            done: set[int] = set()
            if batch:
                last_progress = time.monotonic()
                self._fetch_labels(batch, bounds, done)
            else:
                positions = consumer.position([TopicPartition(self.label_topic, p) for p in sorted(todo)])
                done = {tp.partition for tp in positions if tp.offset >= bounds[tp.partition][1]}
                if not done and time.monotonic() - last_progress > STALL_TIMEOUT_S:
                    raise BacktestError(f"no progress reading {self.label_topic} partitions {sorted(todo)} "
                                        f"for {STALL_TIMEOUT_S:.0f} s")
            if done := done & todo:
                consumer.pause([TopicPartition(self.label_topic, p) for p in sorted(done)])
                todo -= done

    def _fetch_labels(self, batch: list[Message], bounds: dict[int, tuple[int, int]], done: set[int]) -> None:
        """Hand the batch's labels of the range to the joiner; invalid and other labels are only counted."""
        report = self.report
        kept = []
        for msg in batch:
            partition = msg.partition()
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    done.add(partition)
                else:
                    log.warning("consume error: %s", err)
                continue
            offset = msg.offset()
            if offset >= bounds[partition][1]:
                done.add(partition)
                continue
            if offset >= bounds[partition][1] - 1:
                done.add(partition)
            report.labels_read += 1
            try:
                label = decode_label(msg.value())
            except InvalidRecord:
                report.labels_invalid += 1
                continue
            if not report.start_ms <= label.ts_ms <= self.label_end_ms:
                report.labels_out_of_range += 1
            elif self.model is not None and label.model_id != self.model:
                report.labels_other_models += 1
            else:
                kept.append(msg)
        if kept:
            self.joiner.receive(kept, self._invalid_label)

    def _invalid_label(self, _msg: Message, _problem: InvalidRecord) -> None:
        self.report.labels_invalid += 1
