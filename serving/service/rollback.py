"""The service's consumer of driftline's rollback requests (``<prefix>rollback``, CloudEvents 1.0 JSON).

A daemon thread polls the topic and hands each request for this service's model to
``Deployment.switch``, which acts once per event id and only on a registered version. Every service
instance must see every request (each replica has to switch), so each one has its own consumer group,
``<DRIFTLINE_CONSUMER_GROUP>-serve-<model_id>-<instance>``, and commits what it handled: a restart resumes
where it stopped and sees the requests published meanwhile. A group seen for the first time starts at the
end of the topic, never replaying old rollbacks onto a fresh deployment; it positions itself explicitly at
the end when it is assigned and commits that position, so a request published once ``ready`` is set is never
skipped, even by a restart that comes before it.

Nothing read off the topic can stop the thread: an unparsable record, an event of another type or model, or
a failing switch is logged, counted (``driftline_serving_rollbacks_total{outcome}``) and skipped. The Kafka
client's log lines go to the ``driftline.serving.kafka`` logger, like the SDK's.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from driftline.errors import ContractError
from driftline.serving.monitor import KAFKA_LOGGER
from driftline.serving.service.deployment import Deployment
from driftline.serving.service.metrics import ServiceMetrics
from driftline.streams.kafka.security import KafkaSecurity

log = logging.getLogger(__name__)
ROLLBACK_TYPE = "io.driftline.rollback.requested"
_ID_MAX = 256


class MalformedRollback(ContractError):
    """A record on the rollback topic is not a rollback request this service can act on."""


@dataclass(frozen=True, slots=True)
class RollbackRequest:
    """The fields of a rollback CloudEvent the service acts on."""

    event_id: str
    model_id: str
    to_version: str
    from_version: str | None
    policy: str


def _text(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= _ID_MAX:
        raise MalformedRollback(f"{where}{key}: expected a non-empty string, got {value!r:.80}")
    return value


def parse(value: bytes | None) -> RollbackRequest:
    """The request in a record's value; raises ``MalformedRollback`` saying what is wrong."""
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise MalformedRollback(f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise MalformedRollback(f"expected a JSON object, got {type(event).__name__}")
    if event.get("type") != ROLLBACK_TYPE:
        raise MalformedRollback(f"type: expected {ROLLBACK_TYPE}, got {event.get('type')!r:.80}")
    data = event.get("data")
    if not isinstance(data, dict):
        raise MalformedRollback("data: expected an object")
    from_version = data.get("from_version")
    if from_version is not None and not isinstance(from_version, str):
        raise MalformedRollback(f"data.from_version: expected a string, got {from_version!r:.80}")
    policy = data.get("policy")
    return RollbackRequest(_text(event, "id", ""), _text(data, "model_id", "data."), _text(data, "to_version", "data."),
                           from_version, policy if isinstance(policy, str) else "?")


def handle_record(deployment: Deployment, key: bytes | None, value: bytes | None, topic: str = "") -> str:
    """Act on one record of the rollback topic; return the outcome counted for it."""
    model_id = deployment.registry.model_id
    if key is not None and key != model_id.encode():
        return "other_model"  # the record key is the model id: no need to parse another model's request
    try:
        request = parse(value)
    except MalformedRollback as exc:
        log.warning("skipping a malformed record on %s: %s", topic, exc)
        return "malformed"
    if request.model_id != model_id:
        return "other_model"
    reason = (f"rollback {request.event_id} from driftline (policy {request.policy}, "
              f"{request.from_version} -> {request.to_version})")
    return deployment.switch(request.to_version, trigger="rollback", reason=reason, event_id=request.event_id,
                             from_version=request.from_version).value


class RollbackListener:
    """Consumes rollback requests for one model on a daemon thread until ``stop()``."""

    def __init__(self, deployment: Deployment, metrics: ServiceMetrics, *, bootstrap: str, topic: str,
                 group_id: str, poll_seconds: float = 0.5, security: KafkaSecurity | None = None) -> None:
        self.deployment = deployment
        self.metrics = metrics
        self.model_id = deployment.registry.model_id
        self.topic = topic
        self.poll_seconds = poll_seconds
        self.ready = threading.Event()  # set once partitions are assigned and positioned
        self._stop = threading.Event()
        self._last_error: int | None = None
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False,
            "auto.offset.reset": "latest", "logger": KAFKA_LOGGER,
            # a topic created after the service started is found within seconds, not the default 5 minutes
            "topic.metadata.refresh.interval.ms": 5000,
            **(security or KafkaSecurity()).config(),
        })
        self._thread = threading.Thread(target=self._run, name=f"rollback-{self.model_id}", daemon=True)

    def start(self) -> RollbackListener:
        self._consumer.subscribe([self.topic], on_assign=self._on_assign)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                msg = self._consumer.poll(self.poll_seconds)
                if msg is None:
                    continue
                if msg.error() is not None:
                    self._note_error(msg.error())
                    continue
                self._last_error = None
                try:
                    outcome = handle_record(self.deployment, msg.key(), msg.value(), self.topic)
                except Exception:
                    # Whatever went wrong with this one request, the service keeps serving and keeps
                    # listening for the next: the traceback is logged and the record counted.
                    log.exception("handling the record at %s[%s]@%s failed", msg.topic(), msg.partition(),
                                  msg.offset())
                    outcome = "error"
                self.metrics.rollbacks.labels(outcome=outcome).inc()
                self._commit(msg)
        finally:
            self._consumer.close()

    def _commit(self, msg: Message) -> None:
        try:
            self._consumer.commit(message=msg, asynchronous=False)
        except KafkaException as exc:
            # a redelivery after a restart is recognised by its event id, so losing this commit is harmless
            log.warning("could not commit %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), exc)

    def _note_error(self, error: KafkaError) -> None:
        if error.code() != self._last_error:  # once per kind of error until a record arrives, not every poll
            log.warning("rollback consumer on %s: %s", self.topic, error.str())
            self._last_error = error.code()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            positioned = consumer.committed(partitions, timeout=10)
            fresh = [tp for tp in positioned if tp.offset < 0]
            for tp in fresh:  # never committed: start at the end of the partition as it is now ...
                tp.offset = consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            if fresh:  # ... and remember that, so a restart sees what was published while it was down
                consumer.commit(offsets=fresh, asynchronous=False)
            consumer.assign(positioned)
        except KafkaException as exc:
            log.warning("could not position the rollback consumer (%s); starting at the latest offsets", exc)
            consumer.assign(partitions)
        log.info("listening for rollbacks of %s on %s (%d partitions)", self.model_id, self.topic, len(partitions))
        self.ready.set()
