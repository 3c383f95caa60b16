"""The policy engine's changelog: its state records on the compacted ``<prefix>alert-state`` topic.

The engine's state (open incidents, streaks, revisions seen, cooldown clocks, the versions that served healthy
windows) is a set of records keyed by ``<model_id>\\x1f...``. Each record is written to the alert-state partition
with the same number as the findings partition it was decided on, so the worker that is assigned findings
partition *p* rebuilds exactly its models' state by reading alert-state partition *p* to its end. Compaction
keeps the latest record per key; a ``None`` value (a tombstone) deletes one. No local file is involved, so a
worker that restarts elsewhere continues where the killed one stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from driftline.errors import InvalidRecord, KafkaUnavailable
from driftline.streams.actions.decisions import AlertTransition
from driftline.streams.config.model_config import config_source
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import kafka_io, refusals, topics
from driftline.streams.kafka.boundary import kafka_errors
from driftline.streams.kafka.kafka_io import Outbox
from driftline.streams.kafka.security import client_config

if TYPE_CHECKING:
    from driftline.streams.actions.engine import PolicyEngine


def read_partitions(settings: Settings, partitions: Iterable[int], timeout: float = 60.0,
                    changelog: str = topics.ALERT_STATE) -> dict[str, bytes]:
    """The latest state record of every key in the given partitions of a compacted changelog (``alert-state``,
    or the merge stage's ``tick-state``), tombstoned keys left out."""
    topic = settings.topic(changelog)
    wanted = sorted(set(partitions))
    state: dict[str, bytes] = {}
    if not wanted:
        return state
    with kafka_errors(f"reading {topic}"):
        reader = Consumer(client_config(settings, {
            "group.id": f"{settings.consumer_group}-{changelog}-reader", "enable.auto.commit": False,
            "enable.partition.eof": True, "fetch.message.max.bytes": 8_388_608, "logger": kafka_io.KAFKA_LOG}))
    try:
        ends: dict[int, int] = {}
        with kafka_errors(f"reading {topic}"):
            for p in wanted:
                low, high = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                if high > low:
                    ends[p] = high
            reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"{topic} partitions {sorted(ends)} not read to their end in {timeout:.0f} s")
            with kafka_errors(f"reading {topic}"):
                batch = reader.consume(500, timeout=0.5)
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaUnavailable(f"reading {topic}: {err}")
                    if msg.partition() in ends and (msg.offset() or 0) >= ends[msg.partition()]:
                        del ends[msg.partition()]
                    continue
                try:
                    key = (msg.key() or b"").decode()
                except UnicodeDecodeError as exc:  # no record driftline writes has such a key
                    refusals.skipped(topic, f"at {msg.partition()}/{msg.offset()}", InvalidRecord(f"key: {exc}"))
                    continue
                value = msg.value()
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
    finally:
        reader.close()
    return state


def restore_engine(engine: PolicyEngine, records: dict[str, bytes], topic: str) -> None:
    """Load the engine's state records; one that does not fit is skipped and reported (its stream starts afresh)."""
    for key, value in records.items():
        try:
            engine.restore(key, value)
        except InvalidRecord as exc:
            refusals.skipped(topic, f"key {key[:80]!r}", exc)


class StateLog:
    """Writes the engine's changed state records to the partition their findings came from."""

    def __init__(self, settings: Settings, outbox: Outbox) -> None:
        self.topic = settings.topic(topics.ALERT_STATE)
        self.outbox = outbox

    def write(self, partition: int, records: dict[str, bytes | None]) -> None:
        for key, value in records.items():
            self.outbox.produce(self.topic, value, key.encode(), partition=partition)


def open_incidents(settings: Settings) -> list[AlertTransition]:
    """The open incidents of every model, read from the changelog (what ``driftline alerts list`` prints)."""
    from driftline.streams.actions.engine import PolicyEngine

    topics.ensure_topics(settings)
    topic = settings.topic(topics.ALERT_STATE)
    with kafka_errors(f"listing {topic}"):
        lister = kafka_io.consumer(settings, f"{settings.consumer_group}-alerts-list")
        try:
            partitions = list(lister.list_topics(topic, timeout=30).topics[topic].partitions)
        finally:
            lister.close()
    engine = PolicyEngine(config_source(settings))
    restore_engine(engine, read_partitions(settings, partitions), topic)
    return engine.open_incidents()
