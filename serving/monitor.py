"""The producer SDK embedded in serving apps: log predictions and labels to Kafka without ever blocking.

Once constructed, ``Monitor`` never blocks and never raises on the request path because of the broker:
records wait in librdkafka's bounded queue while the broker is away (``max_queue`` records); when that
queue is full a record is dropped and counted, and records the broker finally refuses are counted as
failed. Only a caller's mistake (a wrong argument type or value) raises, with the field named, and so
does logging through a ``Monitor`` that was closed (``MonitorClosed``).

The Kafka client's own log lines (librdkafka's ``FAIL``, ``GETPID``, ...) go to the Python logger
``driftline.serving.kafka`` (``KAFKA_LOGGER``), never straight to stderr: the app's logging configuration
decides where they land. They are handed over whenever the producer is polled, which every ``log_*`` does.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter, Gauge

from driftline.errors import MonitorClosed
from driftline.serving.pii import PiiPolicy
from driftline.streams.kafka.security import KafkaSecurity

KAFKA_LOGGER = logging.getLogger("driftline.serving.kafka")
log = logging.getLogger(__name__)
PARTITIONER = "murmur2_random"  # the Java client's and aiokafka's murmur2: predictions and labels co-partition

SENT = Counter("driftline_sdk_records_sent_total", "Records the broker acknowledged", ["topic"])
FAILED = Counter("driftline_sdk_records_failed_total", "Records the broker finally refused", ["topic"])
DROPPED = Counter("driftline_sdk_records_dropped_total", "Records dropped because the local queue was full",
                  ["topic"])
QUEUE_DEPTH = Gauge("driftline_sdk_queue_depth", "Records waiting in the local producer queue")

Scalar = float | int | str | bool | None


@dataclass(frozen=True, slots=True)
class MonitorStats:
    """A snapshot of one ``Monitor``'s record counts."""

    sent: int  # acknowledged by the broker
    failed: int  # finally refused by the broker
    dropped: int  # local queue full, or still undelivered at close()
    queued: int  # waiting in the local producer queue now


def _text(field: str, value: object, max_len: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, got {type(value).__name__}")
    if not 0 < len(value) <= max_len:
        raise ValueError(f"{field} must have 1..{max_len} characters, got {len(value)}")
    return value


def _number(field: str, value: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{field} must be a number, got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        return int(value)
    as_float = float(value)
    if not math.isfinite(as_float):
        raise ValueError(f"{field} must be finite, got {as_float}")
    return as_float


def _probability(field: str, value: object) -> float:
    p = float(_number(field, value))
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{field} must be in [0, 1], got {p}")
    return p


def _feature(name: str, value: object) -> Scalar:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, numbers.Real):
        as_float = float(value)
        if math.isnan(as_float):
            return None  # NaN means missing; JSON has no NaN
        if math.isinf(as_float):
            raise ValueError(f"features[{name!r}] must be finite, got {as_float}")
        return int(value) if isinstance(value, numbers.Integral) else as_float
    raise TypeError(f"features[{name!r}] must be a number, str, bool or None, got {type(value).__name__}")


def _features(features: Mapping[str, object]) -> dict[str, Scalar]:
    """The features as the contract wants them. The plain types (what a JSON request decodes to) take a fast
    path of exact type checks; anything else (numpy scalars, Decimal, a wrong type) goes through ``_feature``."""
    out: dict[str, Scalar] = {}
    for k, v in features.items():
        name = k if type(k) is str and 0 < len(k) <= 256 else _text("feature name", str(k), 256)
        if type(v) is float:
            out[name] = v if math.isfinite(v) else _feature(name, v)
        elif type(v) is str or type(v) is int or type(v) is bool or v is None:
            out[name] = v
        else:
            out[name] = _feature(name, v)
    return out


def _probabilities(probabilities: object) -> dict[str, float]:
    if not isinstance(probabilities, Mapping) or not probabilities:
        raise TypeError("probabilities must be a non-empty mapping of class -> probability")
    return {str(k): p if type(p) is float and 0.0 <= p <= 1.0 else _probability(f"probabilities[{k!r}]", p)
            for k, p in probabilities.items()}


def _segments(segments: Mapping[str, str]) -> dict[str, str]:
    return {k if type(k) is str and 0 < len(k) <= 256 else _text("segment name", k, 256):
            v if type(v) is str and 0 < len(v) <= 256 else _text(f"segments[{k!r}]", v, 256)
            for k, v in segments.items()}


def _label(field: str, value: object) -> str | float | int | bool:
    if isinstance(value, str | bool):
        return value
    return _number(field, value)


def _timestamp(ts: datetime | int | float | None) -> int:
    if ts is None:
        return int(time.time() * 1000)
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise ValueError("ts must be timezone-aware (a naive datetime is ambiguous)")
        return int(ts.timestamp() * 1000)
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise TypeError(f"ts must be a datetime or epoch milliseconds, got {type(ts).__name__}")
    return int(ts)


def _warn_missing_topics(producer: Producer, bootstrap: str, topics: tuple[str, ...], hold_ms: int,
                         stop: threading.Event) -> None:
    """Once the broker first answers, say in one log line which of ``topics`` do not exist.

    Without it a missing topic shows only when its records fail, one by one, ``hold_ms`` later. Runs in its
    own thread: a metadata request may wait for the broker, which ``log_*`` never does. Gives up after
    ``hold_ms`` (a monitor never closed and never connected leaves no thread behind).
    """
    deadline = time.monotonic() + hold_ms / 1000
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            listed = producer.list_topics(timeout=5).topics
        except KafkaException:
            stop.wait(1.0)
            continue
        missing = [topic for topic in topics if topic not in listed]
        if missing:
            log.warning("Kafka topic(s) %s do not exist on %s: their records wait up to %.0f s for them, then "
                        "fail; create them with `driftline topics create` (or `driftline kafka up` locally)",
                        ", ".join(missing), bootstrap, hold_ms / 1000)
        return


class Monitor:
    """Log one model's predictions and labels to driftline.

    Use it as a context manager (``with Monitor(...) as monitor:``) or call ``close()``, which is
    idempotent: the ``with`` block's exit after an explicit ``close(60)`` changes nothing.

    >>> with Monitor("127.0.0.1:1", model_id="fraud", model_version="3", max_queue=10) as monitor:
    ...     monitor.log_prediction("p-1", {"amount": 12.5, "country": "FR"}, score=0.91, segments={"tier": "gold"})
    ...     monitor.stats().queued
    ...     monitor.close(timeout=0)
    1
    1
    >>> monitor.stats()
    MonitorStats(sent=0, failed=0, dropped=1, queued=1)
    >>> monitor.log_label("p-1", "fraud")
    Traceback (most recent call last):
    ...
    driftline.errors.MonitorClosed: Monitor.log_label() called after close()
    >>> del monitor
    """

    def __init__(self, bootstrap: str, *, model_id: str, model_version: str, topic_prefix: str = "driftline.",
                 max_queue: int = 100_000, producer_config: Mapping[str, Any] | None = None,
                 security: KafkaSecurity | None = None, pii: PiiPolicy | None = None) -> None:
        """``security``: how to authenticate and encrypt (SASL, TLS; default plaintext). ``pii``: features and
        segments dropped or hashed before they leave the process. Both are checked here: a wrong option or a
        missing PII key raises ``ValueError`` naming it. ``producer_config``: any other librdkafka property."""
        self.model_id = _text("model_id", model_id, 256)
        self.model_version = _text("model_version", model_version, 128)
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        security = security or KafkaSecurity()
        problems = security.problems()
        if problems:
            raise ValueError("; ".join(f"security.{name}: {why}" for name, why in problems))
        self._redactor = pii.redactor() if pii is not None else None
        self.predictions_topic = f"{topic_prefix}predictions"
        self.labels_topic = f"{topic_prefix}labels"
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            # acknowledged = written to every in-sync replica (min.insync.replicas of them on a cluster);
            # idempotence keeps retries after a lost acknowledgement from writing a record twice
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 10,
            "partitioner": PARTITIONER,
            "queue.buffering.max.messages": max_queue,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.timeout.ms": 300_000,
            # back within a second of a broker's return: a worker closes a quiet partition's windows after
            # DRIFTLINE_IDLE_PARTITION_SECONDS (5 s), and the records held meanwhile must arrive before that
            "reconnect.backoff.max.ms": 1000,
            "log_level": 3,
            "logger": KAFKA_LOGGER,
            **security.config(),
        }
        conf.update(producer_config or {})
        # a topic that does not exist yet holds records as long as an absent broker does (not librdkafka's
        # 30 s): whoever runs `driftline topics create` in that time loses nothing
        conf.setdefault("topic.metadata.propagation.max.ms", conf["message.timeout.ms"])
        # One delivery callback for the producer instead of one per record: a per-record callback costs
        # about a microsecond more on every log_* call.
        conf["on_delivery"] = self._on_delivery
        self._producer = Producer(conf)
        self._closed = False
        self._undelivered = 0  # close()'s result, returned again by every later close()
        self._sent_counters: dict[str, Any] = {}
        self._stop_topic_check = threading.Event()
        threading.Thread(target=_warn_missing_topics, name="driftline-monitor-topics", daemon=True,
                         args=(self._producer, bootstrap, (self.predictions_topic, self.labels_topic),
                               conf["message.timeout.ms"], self._stop_topic_check)).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def is_closed(self) -> bool:
        """Whether ``close()`` was called; ``log_*`` then raises ``MonitorClosed``."""
        return self._closed

    def log_prediction(self, prediction_id: str, features: Mapping[str, object], *, label: object = None,
                       score: object = None, probabilities: Mapping[str, object] | None = None,
                       value: object = None, segments: Mapping[str, str] | None = None,
                       ts: datetime | int | float | None = None, model_version: str | None = None) -> None:
        """Queue one prediction; returns at once. Give ``label``/``score``/``probabilities`` or ``value``.

        ``model_version`` overrides the monitor's own for this prediction: a service that switches versions
        while running (a rollback) keeps one producer and names the version that answered each request.
        """
        self._check_open("log_prediction")
        pid = _text("prediction_id", prediction_id, 128)
        version = self.model_version if model_version is None else _text("model_version", model_version, 128)
        if not isinstance(features, Mapping):
            raise TypeError(f"features must be a mapping, got {type(features).__name__}")
        output: dict[str, Any] = {}
        if label is not None:
            output["label"] = _label("label", label)
        if score is not None:
            output["score"] = score if type(score) is float and 0.0 <= score <= 1.0 else _probability("score", score)
        if probabilities is not None:
            output["probabilities"] = _probabilities(probabilities)
        if value is not None:
            output["value"] = _number("value", value)
        if not output:
            raise ValueError("give at least one of label, score, probabilities or value")
        event: dict[str, Any] = {
            "schema_version": 1,
            "prediction_id": pid,
            "model_id": self.model_id,
            "model_version": version,
            "ts": _timestamp(ts),
            "features": _features(features) if self._redactor is None else self._redactor.apply(_features(features)),
            "prediction": output,
        }
        if segments:
            event["segments"] = _segments(segments) if self._redactor is None else self._redactor.apply(
                _segments(segments))
        self._send(self.predictions_topic, pid, orjson.dumps(event))

    def log_label(self, prediction_id: str, label: object, *, ts: datetime | int | float | None = None) -> None:
        """Queue the ground truth of an earlier prediction; returns at once."""
        self._check_open("log_label")
        pid = _text("prediction_id", prediction_id, 128)
        event = {"schema_version": 1, "prediction_id": pid, "model_id": self.model_id, "ts": _timestamp(ts),
                 "label": _label("label", label)}
        self._send(self.labels_topic, pid, orjson.dumps(event))

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` seconds for delivery; return how many records are still queued."""
        remaining = self._producer.flush(timeout)
        QUEUE_DEPTH.set(remaining)
        return remaining

    def close(self, timeout: float = 10.0) -> int:
        """Flush and return the records left undelivered (counted as dropped); later calls return the same."""
        if self._closed:
            return self._undelivered
        # Closed before the flush: a record logged while it runs would be left behind uncounted.
        self._closed = True
        self._stop_topic_check.set()
        remaining = self.flush(timeout)
        if remaining:
            self.dropped += remaining
            DROPPED.labels(topic=self.predictions_topic).inc(remaining)
        self._undelivered = remaining
        return remaining

    def stats(self) -> MonitorStats:
        """The counts so far; ``queued`` is the local producer queue's depth now."""
        # Serve what waits on the client's event queue first (delivery reports, its log lines, errors): the
        # queue length librdkafka reports counts those too, not only the records still to be delivered.
        self._producer.poll(0)
        return MonitorStats(sent=self.sent, failed=self.failed, dropped=self.dropped, queued=len(self._producer))

    def _check_open(self, call: str) -> None:
        if self._closed:
            raise MonitorClosed(f"Monitor.{call}() called after close()")

    def _send(self, topic: str, key: str, value: bytes) -> None:
        try:
            self._producer.produce(topic, value=value, key=key.encode())
        except BufferError:
            self.dropped += 1
            DROPPED.labels(topic=topic).inc()
        except KafkaException:
            self.failed += 1
            FAILED.labels(topic=topic).inc()
        self._producer.poll(0)
        QUEUE_DEPTH.set(len(self._producer))

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        topic = msg.topic() or ""
        if err is None:
            self.sent += 1
            counter = self._sent_counters.get(topic)
            if counter is None:  # looked up once per topic: labels() takes a lock and hashes on every call
                counter = self._sent_counters[topic] = SENT.labels(topic=topic)
            counter.inc()
        else:
            self.failed += 1
            FAILED.labels(topic=topic).inc()
