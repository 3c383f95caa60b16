"""confluent-kafka clients configured the way every driftline stage needs them."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from driftline.errors import DeliveryFailed
from driftline.streams.config.settings import Settings
from driftline.streams.kafka.boundary import KAFKA_LOG, kafka_errors
from driftline.streams.kafka.security import client_config
from driftline.streams.kafka.topics import PARTITIONER

DLQ_VALUE_LIMIT = 900_000


def _connection(kafka: Settings | str) -> dict[str, Any]:
    """Where and how to connect: a worker's settings bring their bootstrap servers and security; a bare bootstrap
    string (a test, a tool against the local broker) is a plaintext connection."""
    return client_config(kafka, {}) if isinstance(kafka, Settings) else {"bootstrap.servers": kafka}


def producer(kafka: Settings | str, **extra: Any) -> Producer:
    """A producer for ``kafka`` (see `_connection`); an invalid ``extra`` setting raises `KafkaRefused`."""
    conf = {
        **_connection(kafka),
        "logger": KAFKA_LOG,
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": 20,
        "partitioner": PARTITIONER,
        "message.max.bytes": 4_194_304,
        **extra,
    }
    with kafka_errors("configuring a Kafka producer"):
        return Producer(conf)


def consumer(kafka: Settings | str, group: str, **extra: Any) -> Consumer:
    """A consumer of ``group`` on ``kafka`` (see `_connection`); an invalid ``extra`` setting raises `KafkaRefused`."""
    conf = {
        **_connection(kafka),
        "logger": KAFKA_LOG,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 4_194_304,
        "partition.assignment.strategy": "range",
        # a worker that dies is replaced within ~10 s instead of librdkafka's default 45 s
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        **extra,
    }
    with kafka_errors("configuring a Kafka consumer"):
        return Consumer(conf)


# The group coordinator is away or still loading (a broker restarting, a coordinator moving).
COORDINATOR_AWAY = frozenset({
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
    KafkaError._WAIT_COORD, KafkaError._ALL_BROKERS_DOWN,
})
# This member's generation is over (its session expired while the coordinator was away, or a rebalance
# started): its partitions are being taken back, and the stage drops them in on_lost/on_revoke.
GENERATION_OVER = frozenset({
    KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
})


def commit(consumer: Consumer, offsets: list[TopicPartition]) -> bool:
    """Commit ``offsets`` synchronously; False when the group could not take them now (a broker outage).

    A stage commits at every checkpoint the latest offsets its outputs cover, so a commit skipped while the
    coordinator is away is made by a later one, and one refused because this member's generation is over
    is not needed: whoever is assigned the partitions next (this worker, once it rejoins) reads them from
    the last commit, as after a crash. Skipping rather than waiting keeps the stage polling, which is how
    its consumer rejoins the group. Any other refusal raises.
    """
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
        return True
    except KafkaException as exc:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is None or err.code() not in COORDINATOR_AWAY | GENERATION_OVER:
            raise
        KAFKA_LOG.warning("commit skipped (%s): a later checkpoint commits, or the partitions go back to the "
                          "group and are read again from the last commit", err.str())
        return False


MAX_COMMIT_METADATA = 3_500  # under Kafka's offset.metadata.max.bytes (4096 by default)


def commit_metadata(max_event_ms: int | None, warm_up: dict[tuple[str, str], list[int]] | None = None) -> str:
    """What a committed offset carries: the partition's event time before it, and the windows it opened of
    model versions still waiting for an automatic reference (``streams.reference_wait``), when they fit."""
    state: dict[str, Any] = {"max_event_ms": max_event_ms}
    if warm_up:
        state["warm_up"] = {f"{model}\x1f{version}": starts for (model, version), starts in sorted(warm_up.items())}
    text = orjson.dumps(state).decode()
    if len(text) > MAX_COMMIT_METADATA:  # too many models warming up at once: they may wait, never lose data
        return orjson.dumps({"max_event_ms": max_event_ms}).decode()
    return text


def _metadata(tp: TopicPartition) -> dict[str, Any]:
    if not tp.metadata:
        return {}
    try:
        state = orjson.loads(tp.metadata)
    except orjson.JSONDecodeError:
        return {}
    return state if isinstance(state, dict) else {}


def restored_max_event_ms(tp: TopicPartition) -> int | None:
    """The partition's max event time saved with its committed offset (None when absent or unreadable)."""
    value = _metadata(tp).get("max_event_ms")
    return value if isinstance(value, int) else None


def restored_warm_up(tp: TopicPartition) -> dict[tuple[str, str], list[int]]:
    """The warm-up windows saved with the committed offset (empty when absent or unreadable)."""
    found = _metadata(tp).get("warm_up")
    if not isinstance(found, dict):
        return {}
    out: dict[tuple[str, str], list[int]] = {}
    for key, starts in found.items():
        model, _, version = str(key).partition("\x1f")
        if isinstance(starts, list) and all(isinstance(s, int) for s in starts):
            out[(model, version)] = sorted(starts)
    return out


def dead_letter(prod: Producer, topic: str, *, value: bytes | None, key: bytes | None, reason: str,
                source_topic: str, partition: int, offset: int, on_delivery: Any = None) -> None:
    """Park a rejected record on the dead-letter topic with the reason and its origin in headers."""
    body = value or b""
    headers = [
        ("driftline.reason", reason.encode()),
        ("driftline.source", f"{source_topic}/{partition}/{offset}".encode()),
    ]
    if len(body) > DLQ_VALUE_LIMIT:
        headers.append(("driftline.truncated_from", str(len(body)).encode()))
        body = body[:DLQ_VALUE_LIMIT]
    prod.produce(topic, value=body, key=key, headers=headers, on_delivery=on_delivery)


class DeliveryLedger:
    """Which checkpoints' records are delivered, so offsets are committed without stopping to flush.

    Records produced up to a checkpoint belong to its epoch; the checkpoint's offsets are safe to commit
    once its epoch and all earlier ones are delivered. A failed delivery is final: nothing is committed
    after it and ``ready`` raises, so the stage stops and its partitions are replayed from the last commit.
    Delivery callbacks run inside ``poll``/``flush`` on the producing thread, so no lock is needed.

    >>> ledger = DeliveryLedger()
    >>> done = ledger.callback()
    >>> ledger.seal([TopicPartition("t", 0, 10)])
    >>> ledger.ready()
    []
    >>> done(None, None)
    >>> [tp.offset for tp in ledger.ready()]
    [10]
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.outstanding: dict[int, int] = {}
        self.pending: deque[tuple[int, list[TopicPartition]]] = deque()
        self.failure: str | None = None

    def callback(self) -> Callable[[KafkaError | None, Any], None]:
        """The on_delivery callback for one record produced in the current epoch."""
        epoch = self.epoch
        self.outstanding[epoch] = self.outstanding.get(epoch, 0) + 1

        def done(err: KafkaError | None, _msg: Any) -> None:
            self.outstanding[epoch] -= 1
            if err is not None and self.failure is None:
                self.failure = str(err)

        return done

    def seal(self, offsets: list[TopicPartition]) -> None:
        """End the current epoch; ``offsets`` become committable when it is delivered."""
        self.pending.append((self.epoch, offsets))
        self.epoch += 1

    def forget(self, topic: str, partitions: set[int]) -> None:
        """Partitions lost to another worker: their sealed offsets must never be committed from here."""
        self.pending = deque((epoch, [tp for tp in offsets if tp.topic != topic or tp.partition not in partitions])
                             for epoch, offsets in self.pending)

    def ready(self) -> list[TopicPartition]:
        """The offsets now safe to commit (latest per partition), in the order the checkpoints sealed them."""
        if self.failure is not None:
            raise DeliveryFailed(f"delivery failed, not committing past it: {self.failure}")
        latest: dict[tuple[str, int], TopicPartition] = {}
        while self.pending and not self.outstanding.get(self.pending[0][0], 0):
            epoch, offsets = self.pending.popleft()
            self.outstanding.pop(epoch, None)
            latest.update(((tp.topic, tp.partition), tp) for tp in offsets)
        return list(latest.values())


class Outbox:
    """A producer whose records the caller's next offset commit depends on: ``settle`` before committing.

    Used where records are few (findings, alerts, action requests): ``settle`` flushes and raises
    `DeliveryFailed` if any record since the last settle was not delivered, so offsets are never committed
    past a lost record and the stage replays instead.
    """

    def __init__(self, prod: Producer) -> None:
        self.producer = prod
        self.failure: str | None = None

    def track(self, err: KafkaError | None, _msg: Any) -> None:
        """The on_delivery callback of every record the outbox vouches for."""
        if err is not None and self.failure is None:
            self.failure = str(err)

    def produce(self, topic: str, value: bytes | None, key: bytes, *, partition: int | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        extra = {} if partition is None else {"partition": partition}
        with kafka_errors(f"producing to {topic}"):
            self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self.track, **extra)
        self.producer.poll(0)

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every record produced so far is delivered; raise `DeliveryFailed` otherwise."""
        left = self.producer.flush(timeout)
        failure, self.failure = self.failure, None
        if left or failure is not None:
            raise DeliveryFailed(f"{left} record(s) undelivered after {timeout:.0f} s" if left
                                 else f"delivery failed: {failure}")
