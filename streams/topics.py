"""Topic names and creation. Everything keyed by prediction_id is partitioned with murmur2 (Java's default)."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from serving.monitor import PARTITIONER
from streams.settings import Settings

PREDICTIONS = "predictions"
LABELS = "labels"
DLQ = "dlq"
SUMMARIES = "summaries"
ALL = (PREDICTIONS, LABELS, DLQ, SUMMARIES)
__all__ = ["ALL", "DLQ", "LABELS", "PARTITIONER", "PREDICTIONS", "SUMMARIES", "ensure_topics", "wait_for_leaders"]



def ensure_topics(settings: Settings, names: tuple[str, ...] = ALL, timeout: float = 30.0) -> None:
    """Create the missing topics with ``settings.topic_partitions`` partitions; existing ones are kept."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(settings.topic(name), num_partitions=settings.topic_partitions, replication_factor=1)
        for name in names if settings.topic(name) not in existing
    ]
    if not wanted:
        return
    for topic, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise RuntimeError(f"cannot create topic {topic}: {exc}") from exc
    wait_for_leaders(admin, [t.topic for t in wanted], timeout)


def wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Return once every partition of the new topics has a leader, so the first produce is not retried."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=timeout).topics
        if all(n in meta and meta[n].partitions and all(p.leader >= 0 for p in meta[n].partitions.values())
               for n in names):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topics {names} have no leader after {timeout:.0f} s")
