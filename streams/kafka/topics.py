"""Topic names and creation. Everything keyed by prediction_id is partitioned with murmur2 (Java's default)."""

from __future__ import annotations

import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.errors import TopicError
from driftline.serving.monitor import PARTITIONER
from driftline.streams.config.settings import Settings
from driftline.streams.kafka.boundary import KAFKA_LOG, broker_error, kafka_errors

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
__all__ = ["ALERTS", "ALERT_DELIVERIES", "ALERT_STATE", "ALL", "DLQ", "FINDINGS", "JOIN_STATE", "LABELS",
           "PARTITIONER", "PREDICTIONS", "REFERENCES", "RETRAIN", "ROLLBACK", "SILENCES", "SUMMARIES",
           "TICK_STATE", "ensure_topics", "wait_for_leaders"]


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create every missing topic driftline uses; existing ones are kept as they are.

    The bus topics get ``settings.topic_partitions`` partitions; the join-state changelog as many as the
    predictions topic has (it is read back per input partition) and a retention of the label delay; the
    alert-state changelog as many as the findings topic, compacted (the policy engine reads back the
    partitions it is assigned); the tick-state changelog as many as the summaries topic, compacted (the
    merge stage reads back its sequential detectors' state per summaries partition); the references and
    silences topics one compacted partition each.
    Raises `KafkaUnavailable` when no broker answers and `TopicError` when a topic cannot be created.
    """
    with kafka_errors(f"creating driftline's topics on {settings.kafka_bootstrap}", TopicError):
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "logger": KAFKA_LOG})
        _create(admin, [NewTopic(settings.topic(name), num_partitions=settings.topic_partitions,
                                 replication_factor=1) for name in ALL], timeout)
        listed = admin.list_topics(timeout=timeout).topics
        partitions = len(listed[settings.topic(PREDICTIONS)].partitions)
        findings_partitions = len(listed[settings.topic(FINDINGS)].partitions)
        summaries_partitions = len(listed[settings.topic(SUMMARIES)].partitions)
        retention_ms = int((settings.max_label_delay_seconds + 3600) * 1000)
        _create(admin, [
            NewTopic(settings.topic(JOIN_STATE), num_partitions=partitions, replication_factor=1,
                     config={"retention.ms": str(retention_ms), "max.message.bytes": "8388608"}),
            NewTopic(settings.topic(REFERENCES), num_partitions=1, replication_factor=1,
                     config={"cleanup.policy": "compact", "max.message.bytes": "8388608"}),
            NewTopic(settings.topic(ALERT_STATE), num_partitions=findings_partitions, replication_factor=1,
                     config={"cleanup.policy": "compact", "max.message.bytes": "8388608"}),
            NewTopic(settings.topic(TICK_STATE), num_partitions=summaries_partitions, replication_factor=1,
                     config={"cleanup.policy": "compact", "max.message.bytes": "8388608"}),
            NewTopic(settings.topic(SILENCES), num_partitions=1, replication_factor=1,
                     config={"cleanup.policy": "compact"}),
        ], timeout)


def _create(admin: AdminClient, topics: list[NewTopic], timeout: float) -> None:
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [t for t in topics if t.topic not in existing]
    if not wanted:
        return
    for topic, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise broker_error(exc, f"cannot create topic {topic}", TopicError) from exc
    wait_for_leaders(admin, [t.topic for t in wanted], timeout)


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
