"""Records of driftline's own topics that a reader refused (`streams.pipeline.internal`): reported, never fatal.

Every refusal is logged with its reason and counted in ``driftline_internal_records_refused_total{topic}``.
A stage that consumes an internal topic also parks the record on ``<prefix>dlq`` (reason and origin in the
headers, as for input records) through `DeadLetters`; the compacted state topics read back at restore
(join-state, alert-state, tick-state, references, silences) are only skipped: the record is the state
itself, so there is nothing to replay, and the next state written under its key replaces it.
"""

from __future__ import annotations

import logging
from typing import Protocol

from confluent_kafka import Producer

from driftline.errors import DeliveryFailed
from driftline.streams import metrics
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import kafka_io, topics

log = logging.getLogger("driftline.refusals")


class Record(Protocol):
    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...


def reported(topic: str, where: str, problem: Exception | str, *, dead_lettered: bool) -> None:
    """Log and count one refused record (``where``: its place in ``topic``, as people read it)."""
    metrics.INTERNAL_REFUSED.labels(topic=topic).inc()
    if dead_lettered:
        metrics.DEAD_LETTERS.inc()
    log.error("refused %s record %s (%s): %s", topic, where, "dead-lettered" if dead_lettered else "skipped", problem)


def skipped(topic: str, where: str, problem: Exception) -> None:
    """A state record read back at restore that does not fit: logged and counted, not restored."""
    reported(topic, where, problem, dead_lettered=False)


class DeadLetters:
    """The dead-letter path of a stage without a delivery ledger: produce as refused, `settle` once per batch."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dlq = settings.topic(topics.DLQ)
        self.producer: Producer | None = None  # made on the first refusal: most workers never need one
        self.unsettled = 0
        self.failure: str | None = None

    def refuse(self, msg: Record, problem: Exception) -> None:
        topic = msg.topic() or ""
        reported(topic, f"at {msg.partition()}/{msg.offset()}", problem, dead_lettered=True)
        if self.producer is None:
            self.producer = kafka_io.producer(self.settings)
        kafka_io.dead_letter(self.producer, self.dlq, value=msg.value(), key=msg.key(), reason=str(problem),
                             source_topic=topic, partition=msg.partition() or 0, offset=msg.offset() or 0,
                             on_delivery=self._delivered)
        self.unsettled += 1
        self.producer.poll(0)

    def _delivered(self, err: object, _msg: object) -> None:
        if err is not None and self.failure is None:
            self.failure = str(err)

    def settle(self, timeout: float = 30.0) -> None:
        """Before the stage commits past them: every dead letter is on the broker, or `DeliveryFailed`."""
        if not self.unsettled or self.producer is None:
            return
        left = self.producer.flush(timeout)
        failure, self.failure, self.unsettled = self.failure, None, 0
        if left or failure is not None:
            raise DeliveryFailed(f"{left} dead letter(s) undelivered" if left else f"dead letter lost: {failure}")
