"""The references topic: publishing a reference, and following the compacted ``<prefix>references`` topic.

A reference is published by ``driftline reference set`` or by the merge stage's automatic warm-up; every
worker reads the topic from the beginning into its ``ReferenceBook`` and keeps following it.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from driftline.errors import DeliveryFailed, InvalidRecord, KafkaUnavailable
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import kafka_io, refusals, topics
from driftline.streams.kafka.boundary import kafka_errors
from driftline.streams.kafka.security import client_config
from driftline.streams.references.book import Reference, ReferenceBook


def publish(settings: Settings, ref: Reference, producer: Producer | None = None) -> None:
    """Produce ``ref`` to the references topic; with no ``producer`` given, wait for its delivery.

    Raises `DeliveryFailed` when Kafka refuses it or, with its own producer, does not confirm it in 30 s.
    """
    own = producer is None
    prod = producer or kafka_io.producer(settings, **{"message.max.bytes": 8_388_608})
    with kafka_errors(f"publishing reference {ref.reference_id}", DeliveryFailed):
        prod.produce(settings.topic(topics.REFERENCES), key=ref.key, value=ref.encode())
    if own and prod.flush(30):
        raise DeliveryFailed(f"Kafka at {settings.kafka_bootstrap} did not confirm reference {ref.reference_id} "
                             "in 30 s")


class ReferenceFollower:
    """Reads the references topic from the beginning into a ReferenceBook, then keeps following it."""

    def __init__(self, settings: Settings, book: ReferenceBook) -> None:
        self.settings = settings
        self.book = book
        self.topic = settings.topic(topics.REFERENCES)
        with kafka_errors(f"following {self.topic}"):
            self.consumer: Consumer = Consumer(client_config(settings, {
                "group.id": f"{settings.consumer_group}-references", "logger": kafka_io.KAFKA_LOG,
                "enable.auto.commit": False, "enable.partition.eof": True, "fetch.message.max.bytes": 8_388_608}))
            self.consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self.caught_up = threading.Event()

    def poll(self, timeout: float = 0.0) -> list[Reference]:
        """Apply what arrived; return the references read."""
        read: list[Reference] = []
        with kafka_errors(f"reading {self.topic}"):
            msgs = self.consumer.consume(100, timeout=timeout)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.caught_up.set()
                continue
            try:
                ref = Reference.decode(msg.value())
            except InvalidRecord as exc:
                refusals.skipped(self.topic, f"at offset {msg.offset()}", exc)
                continue
            self.book.add(ref)
            read.append(ref)
        return read

    def catch_up(self, timeout: float = 30.0) -> list[Reference]:
        """Block until every reference published before now has been read; return them."""
        deadline = time.monotonic() + timeout
        read: list[Reference] = []
        while not self.caught_up.is_set():
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"could not read the references topic {self.topic} in {timeout:.0f} s")
            read += self.poll(0.5)
        return read

    def close(self) -> None:
        self.consumer.close()
