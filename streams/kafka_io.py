"""confluent-kafka clients configured the way every driftline stage needs them."""

from __future__ import annotations

from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.topics import PARTITIONER

DLQ_VALUE_LIMIT = 900_000


def producer(bootstrap: str, **extra: Any) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": 20,
        "partitioner": PARTITIONER,
        "message.max.bytes": 4_194_304,
        **extra,
    }
    return Producer(conf)


def consumer(bootstrap: str, group: str, **extra: Any) -> Consumer:
    conf = {
        "bootstrap.servers": bootstrap,
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
    return Consumer(conf)


def commit_metadata(max_event_ms: int | None) -> str:
    return orjson.dumps({"max_event_ms": max_event_ms}).decode()


def restored_max_event_ms(tp: TopicPartition) -> int | None:
    """The partition's max event time saved with its committed offset (None when absent or unreadable)."""
    if not tp.metadata:
        return None
    try:
        value = orjson.loads(tp.metadata).get("max_event_ms")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) else None


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
