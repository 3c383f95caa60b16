"""The actions stage: run the policy engine on ``<prefix>findings`` and publish and record what it decides.

It also records the dispatcher's delivery outcomes (``<prefix>alert-deliveries``) in ``driftline.alerts``, so one
process (the worker, which owns the ClickHouse store) writes that table.

Each batch is handled in this order, so a SIGKILL at any point loses nothing and re-triggers nothing:

1. The engine decides on every findings record (a revision it has seen is ignored).
2. The alert transitions go to ``<prefix>alerts`` (key = fingerprint) and the retrain and rollback requests
   to ``<prefix>retrain`` / ``<prefix>rollback`` (CloudEvents, key = model id); the outbox is settled.
3. The transitions and delivery outcomes are inserted into ``driftline.alerts`` (deduplicated by event id).
4. The engine's changed state records go to ``<prefix>alert-state``; the outbox is settled.
5. Offsets are committed (at the next checkpoint).

A crash after step 2 re-decides the batch from the last state (same ids: receivers drop the duplicates); a
crash after step 4 finds the decisions in the restored state and makes none again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, Message, TopicPartition

from driftline.streams import metrics, store, store_retry
from driftline.streams.actions import events
from driftline.streams.actions.decisions import ActionRequest, AlertTransition, Decision, RollbackRefused
from driftline.streams.actions.engine import PolicyEngine
from driftline.streams.actions.findings import WindowFindings
from driftline.streams.actions.state_log import StateLog, read_partitions, restore_engine
from driftline.streams.config.model_config import config_source
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import kafka_io, refusals, topics
from driftline.streams.kafka.kafka_io import Outbox
from driftline.streams.references.book import Reference
from driftline.streams.stages.consumer import ConsumerStage, records

log = logging.getLogger("driftline.actions")
CLOUDEVENT_HEADERS = [("content-type", events.CLOUDEVENTS_CONTENT_TYPE.encode())]


class ActionsStage(ConsumerStage):
    def __init__(self, settings: Settings, client: Client, stop: threading.Event) -> None:
        super().__init__(kafka_io.consumer(settings, f"{settings.consumer_group}-actions"), stop,
                         None, 500)
        self.settings = settings
        self.client = client
        self.outbox = Outbox(kafka_io.producer(settings))
        self.state_log = StateLog(settings, self.outbox)
        self.config_for = config_source(settings)
        self.engine = PolicyEngine(self.config_for)
        self.findings_topic = settings.topic(topics.FINDINGS)
        self.deliveries_topic = settings.topic(topics.ALERT_DELIVERIES)
        self.dlq = settings.topic(topics.DLQ)
        self.next_offsets: dict[tuple[str, int], int] = {}

    def subscriptions(self) -> list[str]:
        return [self.findings_topic, self.deliveries_topic]

    def references_read(self, refs: list[Reference]) -> None:
        """The actions stage follows no references."""

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        # Eager rebalancing hands over the whole assignment: rebuild the engine from exactly these partitions.
        mine = [tp.partition for tp in assigned if tp.topic == self.findings_topic]
        self.engine = PolicyEngine(self.config_for)
        restore_engine(self.engine, read_partitions(self.settings, mine), self.settings.topic(topics.ALERT_STATE))
        metrics.OPEN_INCIDENTS.set(len(self.engine.open_incidents()))
        log.info("actions stage assigned findings partitions %s (%d open incidents)", sorted(mine),
                 len(self.engine.open_incidents()))

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._checkpoint()
        self.next_offsets.clear()

    def _on_lost(self, consumer: Consumer, lost: list[TopicPartition]) -> None:
        self.next_offsets.clear()

    def _process(self, batch: list[Message]) -> None:
        decided: dict[int, list[Decision]] = defaultdict(list)
        state: dict[int, dict[str, bytes | None]] = defaultdict(dict)
        deliveries: list[dict[str, Any]] = []
        for msg in records(batch):
            topic, partition = msg.topic(), msg.partition()
            self.next_offsets[(topic, partition)] = msg.offset() + 1
            if topic == self.deliveries_topic:
                self._read_delivery(msg, deliveries)
                continue
            try:
                findings = WindowFindings.decode(msg.value() or b"")
            except (ValueError, TypeError, KeyError) as exc:
                self._dead_letter(msg, f"unreadable findings record: {exc}")
                continue
            decided[partition] += self.engine.observe(findings)
            state[partition].update(self.engine.dirty())
            _, produced_ms = msg.timestamp()
            if produced_ms > 0:
                metrics.POLICY_LAG.set(max(0.0, time.time() - produced_ms / 1000))
        rows = [row for partition_decisions in decided.values() for row in self._publish(partition_decisions)]
        self.outbox.settle()
        # one insert per row, its own id as the token: a replayed batch may group rows differently
        for row in rows:
            store_retry.call(store.insert_alerts, self.client, [row], token=f"transition|{row[0]}")
        for d in deliveries:
            store_retry.call(store.insert_alerts, self.client, [events.delivery_row(d)],
                             token=f"delivery|{d['event_id']}|{d['route']}|{d['outcome']}")
        for partition, changed in state.items():
            self.state_log.write(partition, changed)
        self.outbox.settle()
        metrics.OPEN_INCIDENTS.set(len(self.engine.open_incidents()))

    def _publish(self, decisions: list[Decision]) -> list[list[Any]]:
        """Produce the alert events and action requests of one partition's decisions; return the table rows."""
        by_incident: dict[str, list[ActionRequest | RollbackRefused]] = defaultdict(list)
        for d in decisions:
            if isinstance(d, ActionRequest):
                event = events.cloud_event(d)
                topic = topics.RETRAIN if d.kind == "retrain" else topics.ROLLBACK
                self.outbox.produce(self.settings.topic(topic), events.encode(event), d.model_id.encode(),
                                    headers=CLOUDEVENT_HEADERS)
                metrics.ACTION_REQUESTS.labels(kind=d.kind).inc()
                log.warning("%s requested for %s/%s by policy %s (%s)%s", d.kind, d.model_id, d.model_version,
                            d.policy, d.event_id, f" to version {d.to_version}" if d.to_version else "")
                by_incident[d.incident_id].append(d)
            elif isinstance(d, RollbackRefused):
                metrics.ROLLBACKS_REFUSED.inc()
                log.warning("rollback of %s/%s refused for policy %s: %s", d.model_id, d.model_version, d.policy,
                            d.reason)
                by_incident[d.incident_id].append(d)
        rows = []
        for d in decisions:
            if not isinstance(d, AlertTransition):
                continue
            actions = by_incident.pop(d.incident_id, []) if d.transition == "triggered" else []
            event = events.alert_event(d, actions, self.settings.dashboard_url)
            self.outbox.produce(self.settings.topic(topics.ALERTS), events.encode(event), d.fingerprint.encode())
            metrics.ALERT_TRANSITIONS.labels(transition=d.transition, severity=d.severity).inc()
            log.warning("alert %s %s: %s", d.transition, d.event_id, d.summary)
            rows.append(events.transition_row(event))
        return rows

    def _read_delivery(self, msg: Message, deliveries: list[dict[str, Any]]) -> None:
        try:
            delivery = orjson.loads(msg.value() or b"")
            events.delivery_row(delivery)  # every field the table needs is there
        except (ValueError, TypeError, KeyError) as exc:
            self._dead_letter(msg, f"unreadable alert delivery record: {exc}")
            return
        deliveries.append(delivery)

    def _dead_letter(self, msg: Message, reason: str) -> None:
        metrics.FINDINGS_UNREADABLE.inc()
        refusals.reported(msg.topic() or "", f"at {msg.partition()}/{msg.offset()}", reason, dead_lettered=True)
        # its delivery is checked with the batch's other records: settle() raises if it was lost
        kafka_io.dead_letter(self.outbox.producer, self.dlq, value=msg.value(), key=msg.key(), reason=reason,
                             source_topic=msg.topic() or "", partition=msg.partition() or 0, offset=msg.offset() or 0,
                             on_delivery=self.outbox.track)

    def _checkpoint(self, only: set[int] | None = None) -> None:
        if not self.next_offsets:
            return
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self.next_offsets.items()]
        kafka_io.commit(self.consumer, offsets)
        self.next_offsets.clear()

    def close(self) -> None:
        try:
            self.outbox.settle()
        finally:
            super().close()
