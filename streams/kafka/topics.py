"""Topic names and creation. Everything keyed by prediction_id is partitioned with murmur2 (Java's default)."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.errors import TopicError
from driftline.serving.monitor import PARTITIONER
from driftline.streams.config.settings import Settings
from driftline.streams.kafka.boundary import KAFKA_LOG, broker_error, kafka_errors
from driftline.streams.kafka.security import client_config

PREDICTIONS = "predictions"
LABELS = "labels"
DLQ = "dlq"
SUMMARIES = "summaries"
FINDINGS = "findings"
ALERTS = "alerts"
ALERT_DELIVERIES = "alert-deliveries"
RETRAIN = "retrain"
ROLLBACK = "rollback"
ALL = (PREDICTIONS, LABELS, DLQ, SUMMARIES, FINDINGS, ALERTS, ALERT_DELIVERIES, RETRAIN, ROLLBACK)
JOIN_STATE = "join-state"
ALERT_STATE = "alert-state"
TICK_STATE = "tick-state"
REFERENCES = "references"
SILENCES = "silences"
CHANGELOGS = (JOIN_STATE, ALERT_STATE, TICK_STATE, REFERENCES, SILENCES)  # created after ALL, sized from it
__all__ = ["ALERTS", "ALERT_DELIVERIES", "ALERT_STATE", "ALL", "CHANGELOGS", "DLQ", "FINDINGS", "JOIN_STATE", "LABELS",
           "PARTITIONER", "PREDICTIONS", "REFERENCES", "RETRAIN", "ROLLBACK", "SILENCES", "SUMMARIES",
           "TICK_STATE", "ensure_topics", "layout", "new_topic", "wait_for_leaders"]


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create every missing topic driftline uses; existing ones are kept as they are. Return those created.

    The bus topics get ``settings.topic_partitions`` partitions; the join-state changelog as many as the
    predictions topic has (it is read back per input partition) and a retention of the label delay; the
    alert-state changelog as many as the findings topic, compacted (the policy engine reads back the
    partitions it is assigned); the tick-state changelog as many as the summaries topic, compacted (the
    merge stage reads back its sequential detectors' state per summaries partition); the references and
    silences topics one compacted partition each. Every topic gets ``settings.topic_replication_factor``
    replicas (see `new_topic`).
    Raises `KafkaUnavailable` when no broker answers and `TopicError` when a topic cannot be created.
    """
    with kafka_errors(f"creating driftline's topics on {settings.kafka_bootstrap}", TopicError):
        admin = AdminClient(client_config(settings, {"logger": KAFKA_LOG}))
        created = _create(admin, [new_topic(settings, name, settings.topic_partitions) for name in ALL], timeout)
        listed = admin.list_topics(timeout=timeout).topics
        partitions = len(listed[settings.topic(PREDICTIONS)].partitions)
        findings_partitions = len(listed[settings.topic(FINDINGS)].partitions)
        summaries_partitions = len(listed[settings.topic(SUMMARIES)].partitions)
        retention_ms = int((settings.max_label_delay_seconds + 3600) * 1000)
        changelog = {"cleanup.policy": "compact", "max.message.bytes": "8388608"}
        return created + _create(admin, [
            new_topic(settings, JOIN_STATE, partitions,
                      {"retention.ms": str(retention_ms), "max.message.bytes": "8388608"}),
            new_topic(settings, REFERENCES, 1, changelog),
            new_topic(settings, ALERT_STATE, findings_partitions, changelog),
            new_topic(settings, TICK_STATE, summaries_partitions, changelog),
            new_topic(settings, SILENCES, 1, {"cleanup.policy": "compact"}),
        ], timeout)


def new_topic(settings: Settings, name: str, partitions: int, config: dict[str, str] | None = None) -> NewTopic:
    """A driftline topic with the configured replication factor.

    With more than one replica, ``min.insync.replicas`` is one less: a write acknowledged by ``acks=all``
    (every driftline producer is idempotent, hence ``acks=all``) is then on at least two brokers when the
    factor is 3, and one broker may be down without stopping writes.
    """
    replicas = settings.topic_replication_factor
    durability = {"min.insync.replicas": str(replicas - 1)} if replicas > 1 else {}
    return NewTopic(settings.topic(name), num_partitions=partitions, replication_factor=replicas,
                    config={**durability, **(config or {})})


def layout(settings: Settings, expect: list[str] | tuple[str, ...] = (), timeout: float = 30.0
           ) -> list[tuple[str, int, int]]:
    """(name, partitions, replicas of its first partition) of each driftline topic that exists, by name.

    ``expect``: topics just created. A broker learns of a new topic from the controller a moment later, so
    the listing is asked again until it holds them.
    """
    names = {settings.topic(name) for name in (*ALL, *CHANGELOGS)}
    deadline = time.monotonic() + timeout
    with kafka_errors(f"listing driftline's topics on {settings.kafka_bootstrap}"):
        admin = AdminClient(client_config(settings, {"logger": KAFKA_LOG}))
        listed = admin.list_topics(timeout=timeout).topics
        while not set(expect) <= set(listed) and time.monotonic() < deadline:
            time.sleep(0.1)
            listed = admin.list_topics(timeout=timeout).topics
    return [(name, len(meta.partitions), len(meta.partitions[0].replicas))
            for name, meta in sorted(listed.items()) if name in names]


def _create(admin: AdminClient, topics: list[NewTopic], timeout: float) -> list[str]:
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [t for t in topics if t.topic not in existing]
    if not wanted:
        return []
    created = []
    for topic, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another process's create won the race
                raise broker_error(exc, f"cannot create topic {topic}", TopicError) from exc
        else:
            created.append(topic)
    wait_for_leaders(admin, [t.topic for t in wanted], timeout)
    return created


def wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Return once every partition of the new topics has a leader, so the first produce is not retried."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with kafka_errors(f"waiting for leaders of {names}", TopicError):
            meta = admin.list_topics(timeout=timeout).topics
        if all(n in meta and meta[n].partitions and all(p.leader >= 0 for p in meta[n].partitions.values())
               for n in names):
            return
        time.sleep(0.1)
    raise TopicError(f"topics {names} have no leader after {timeout:.0f} s")
