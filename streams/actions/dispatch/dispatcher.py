"""The dispatcher: reads ``<prefix>alerts`` and delivers each notifying transition to the routes that take it.

One alert at a time per consumer, in offset order, so the transitions of one fingerprint (one partition)
reach a receiver in the order they were decided: a ``resolve`` never overtakes its ``trigger``. For each
alert, its routes are delivered to concurrently; once every route's delivery is final, one outcome per
route is produced on ``<prefix>alert-deliveries`` and flushed, and only then is the alert's offset
committed, synchronously. A crash therefore re-sends at most the alert in flight, which receivers drop by
its dedup key (PagerDuty) or event id (webhooks).

Silences are checked at dispatch time (wall clock), as Alertmanager does: a silence mutes what would page
someone while it is in force, including a backlog of transitions decided before it started. ``resolved``
transitions pass through silences: a resolve never pages anyone, and muting it would leave open an incident
triggered before the silence (PagerDuty ignores a resolve for a dedup key it does not know).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from driftline.errors import DeliveryFailed, InvalidRecord
from driftline.streams.actions import silences
from driftline.streams.actions.dispatch import metrics, pagerduty, routes, webhook
from driftline.streams.actions.dispatch.alert import Alert, decode
from driftline.streams.actions.dispatch.sender import Interrupted, Result, Sender
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import kafka_io, topics
from driftline.streams.kafka.boundary import broker_error, kafka_errors

log = logging.getLogger("driftline.dispatch")
FLUSH_TIMEOUT_S = 30.0


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def outcome_record(alert: Alert, route: routes.Route, result: Result | None,
                   silence: silences.Silence | None) -> dict[str, Any]:
    """The alert-delivery.v1 document of ``alert`` through ``route``: ``result``, or silenced by ``silence``."""
    return {
        "schema_version": 1,
        "event_id": alert.event_id,
        "fingerprint": alert.fingerprint,
        "incident_id": alert.incident_id,
        "model_id": alert.model_id,
        "model_version": alert.model_version,
        "policy": alert.policy,
        "severity": alert.severity,
        "transition": alert.transition,
        "route": route.name,
        "kind": route.spec.kind,
        "outcome": result.outcome if result is not None else "silenced",
        "status": result.status if result is not None else None,
        "attempts": result.attempts if result is not None else 0,
        "response": result.response if result is not None else "",
        "silence_id": silence.id if silence is not None else None,
        "time": _now(),
    }


class Dispatcher:
    """Delivers alerts until ``halt`` is set; ``run`` blocks (the worker runs it in a thread, the CLI in main).

    The routes' secrets are read from ``environ`` (default: the process environment) when it is made, so a
    missing one fails before Kafka is touched (`routes.RouteMissingSecret`).
    """

    def __init__(self, settings: Settings, halt: threading.Event, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.halt = halt
        self.routes = routes.resolve(settings.alert_routes, os.environ if environ is None else environ)
        self.topic = settings.topic(topics.ALERTS)
        self.out_topic = settings.topic(topics.ALERT_DELIVERIES)

    def run(self) -> None:
        """Consume, deliver, publish outcomes, commit; return once ``halt`` is set (the alert in flight is not
        committed when a retry wait is cut short). Raises `DeliveryFailed` when Kafka loses an outcome."""
        if not self.routes:
            log.warning("no alert routes configured (DRIFTLINE_ALERT_ROUTES): alerts are read and not delivered")
        topics.ensure_topics(self.settings)
        longest = max((r.spec.max_retry_seconds + r.spec.timeout_seconds for r in self.routes), default=0.0)
        # one alert is processed between two polls; the group must not evict the dispatcher meanwhile
        poll_interval_ms = int(max(300.0, longest + 60.0) * 1000)
        consumer = kafka_io.consumer(self.settings, f"{self.settings.consumer_group}-dispatch",
                                     **{"max.poll.interval.ms": poll_interval_ms})
        producer = kafka_io.producer(self.settings)
        follower = silences.SilenceFollower(self.settings)
        sender = Sender(self.halt)
        pool = ThreadPoolExecutor(max(1, len(self.routes)), thread_name_prefix="driftline-dispatch")
        try:
            follower.catch_up()
            with kafka_errors(f"subscribing to {self.topic}"):
                consumer.subscribe([self.topic])
            log.info("dispatching %s to %d route(s): %s", self.topic, len(self.routes),
                     ", ".join(r.name for r in self.routes) or "none")
            while not self.halt.is_set():
                follower.poll()
                with kafka_errors(f"reading {self.topic}"):
                    msgs = consumer.consume(num_messages=1, timeout=0.2)
                for msg in msgs:
                    self._handle(msg, producer, follower, sender, pool)
                    self._commit(consumer, msg)
        except Interrupted as exc:
            log.info("%s; the alert in flight is sent again after a restart", exc)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            sender.close()
            follower.close()
            producer.flush(FLUSH_TIMEOUT_S)
            consumer.close()

    def _handle(self, msg: Message, producer: Producer, follower: silences.SilenceFollower, sender: Sender,
                pool: ThreadPoolExecutor) -> None:
        """Deliver one record's alert and publish its outcomes (none for a record to skip)."""
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise broker_error(KafkaException(err), f"reading {self.topic}")
            log.warning("consuming %s: %s", self.topic, err)
            return
        value = msg.value()
        try:
            alert = decode(value)
        except InvalidRecord as exc:
            metrics.MALFORMED.inc()
            log.error("skipping malformed alert at %s/%d/%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            return
        if not alert.notify:
            return
        taking = [r for r in self.routes if r.takes(alert.model_id, alert.severity)]
        if not taking:
            return
        muted = None if alert.transition == "resolved" else follower.muting(alert.model_id, alert.policy,
                                                                             datetime.now(UTC))
        if muted is not None:
            log.info("alert %s of %s/%s silenced by %s", alert.event_id, alert.model_id, alert.policy, muted.id)
            outcomes = [outcome_record(alert, route, None, muted) for route in taking]
        else:
            assert value is not None
            futures = [pool.submit(self._deliver, sender, route, alert, value) for route in taking]
            # a delivery cut short by halt raises Interrupted here: nothing is published or committed
            outcomes = [outcome_record(alert, route, f.result(), None)
                        for route, f in zip(taking, futures, strict=True)]
        self._publish(producer, alert, outcomes)

    def _deliver(self, sender: Sender, route: routes.Route, alert: Alert, value: bytes) -> Result:
        secret = route.secret.get_secret_value()
        if route.spec.kind == "pagerduty":
            body = orjson.dumps(pagerduty.event_body(alert, secret, self.settings.dashboard_url))
            return sender.post(route, body, lambda _sent_at: {"Content-Type": "application/json"})
        return sender.post(route, value, lambda sent_at: webhook.headers(alert, value, secret, sent_at))

    def _publish(self, producer: Producer, alert: Alert, outcomes: list[dict[str, Any]]) -> None:
        failures: list[str] = []

        def done(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        with kafka_errors(f"publishing delivery outcomes of {alert.event_id}", DeliveryFailed):
            for outcome in outcomes:
                producer.produce(self.out_topic, key=alert.fingerprint.encode(), value=orjson.dumps(outcome),
                                 on_delivery=done)
                metrics.DELIVERIES.labels(outcome["route"], outcome["outcome"]).inc()
            left = producer.flush(FLUSH_TIMEOUT_S)
        if left or failures:
            raise DeliveryFailed(f"the delivery outcomes of alert {alert.event_id} were not confirmed by Kafka "
                                 f"({failures[0] if failures else f'{left} pending after {FLUSH_TIMEOUT_S:.0f} s'})")

    @staticmethod
    def _commit(consumer: Consumer, msg: Message) -> None:
        if msg.error() is not None:
            return
        tp = TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)
        try:
            consumer.commit(offsets=[tp], asynchronous=False)
        except KafkaException as exc:
            # the partition moved to another dispatcher in a rebalance: it re-sends from the last commit,
            # the same dedup keys and event ids, which receivers drop
            log.warning("could not commit %s/%d at %d: %s", tp.topic, tp.partition, tp.offset, exc)
