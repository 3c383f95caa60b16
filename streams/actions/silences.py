"""Silences: operator-made mutes of a model's alerts (or one policy's) for a while, like Alertmanager's.

A silence is a record on the compacted ``<prefix>silences`` topic (one partition, key = the silence id);
``driftline alerts unsilence`` writes its tombstone. The dispatcher reads the topic to its end at start and
keeps following it, so a silence made while it runs takes effect within a poll. An expired silence is
ignored (compaction keeps its record until the tombstone; nothing needs to delete it).
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from driftline.errors import ConfigurationError, DeliveryFailed, KafkaUnavailable
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import kafka_io, refusals, topics
from driftline.streams.kafka.boundary import kafka_errors
from driftline.streams.kafka.security import client_config

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = timedelta(days=365)


class BadDuration(ConfigurationError):
    """A silence duration is not like 30m, 2h, 1d or 1h30m, or is zero or longer than a year."""


class UnknownSilence(ConfigurationError):
    """No active silence has the id given."""


class Silence(msgspec.Struct, frozen=True, kw_only=True):
    """Mutes alerts of models matching ``model`` (an id or a glob) and, when set, of ``policy`` only."""

    id: str
    model: str
    policy: str | None = None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at

    def mutes(self, model_id: str, policy: str, at: datetime) -> bool:
        """Whether this silence mutes an alert of ``model_id`` and ``policy`` at ``at``.

        >>> s = new_silence("fraud-*", None, timedelta(hours=1), "deploy", now=datetime(2025, 1, 1, tzinfo=UTC))
        >>> s.mutes("fraud-eu", "drift", datetime(2025, 1, 1, 0, 30, tzinfo=UTC))
        True
        >>> s.mutes("fraud-eu", "drift", datetime(2025, 1, 1, 1, 0, tzinfo=UTC)), s.mutes("churn", "drift", s.starts_at)
        (False, False)
        """
        return (self.active(at) and fnmatch.fnmatchcase(model_id, self.model)
                and (self.policy is None or self.policy == policy))


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``1d``, ``1h30m`` (units s, m, h, d, w) as a timedelta; raises `BadDuration`.

    >>> parse_duration("1h30m"), parse_duration("2d")
    (datetime.timedelta(seconds=5400), datetime.timedelta(days=2))
    """
    compact = text.strip().lower()
    if not compact or _DURATION.sub("", compact):
        raise BadDuration(f"--for {text!r}: expected a duration like 30m, 2h, 1d or 1h30m")
    duration = timedelta(seconds=sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(compact)))
    if not timedelta(0) < duration <= MAX_DURATION:
        raise BadDuration(f"--for {text!r}: must be longer than 0 and at most 365 days")
    return duration


def new_silence(model: str, policy: str | None, duration: timedelta, reason: str,
                now: datetime | None = None) -> Silence:
    """A silence starting ``now`` (default: the current time), made by ``$USER`` (or "driftline")."""
    start = (now or datetime.now(UTC)).astimezone(UTC)
    return Silence(id=str(uuid.uuid4()), model=model, policy=policy or None, starts_at=start,
                   ends_at=start + duration, reason=reason, created_by=os.environ.get("USER") or "driftline")


def _send(settings: Settings, key: str, value: bytes | None, producer: Producer | None) -> None:
    prod = producer or kafka_io.producer(settings)
    with kafka_errors(f"publishing silence {key}", DeliveryFailed):
        prod.produce(settings.topic(topics.SILENCES), key=key.encode(), value=value)
    if producer is None and prod.flush(30):
        raise DeliveryFailed(f"Kafka at {settings.kafka_bootstrap} did not confirm silence {key} in 30 s")


def publish(settings: Settings, silence: Silence, producer: Producer | None = None) -> None:
    """Produce ``silence``; with no ``producer`` given, wait for Kafka to confirm it (`DeliveryFailed` if not)."""
    _send(settings, silence.id, msgspec.json.encode(silence), producer)


def delete(settings: Settings, silence_id: str, producer: Producer | None = None) -> None:
    """Write the tombstone of ``silence_id``: followers drop it, compaction removes its record."""
    _send(settings, silence_id, None, producer)


class SilenceFollower:
    """Reads the silences topic from the beginning, then keeps following it; answers which silence mutes what."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic(topics.SILENCES)
        self.silences: dict[str, Silence] = {}
        self.caught_up = threading.Event()
        with kafka_errors(f"following {self.topic}"):
            # no offsets are committed: every follower reads the whole (compacted, small) topic
            self.consumer = Consumer(client_config(settings, {"group.id": f"{settings.consumer_group}-silences",
                                                              "enable.auto.commit": False,
                                                              "enable.partition.eof": True,
                                                              "logger": kafka_io.KAFKA_LOG}))
            self.consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])

    def poll(self, timeout: float = 0.0) -> None:
        """Apply the records that arrived."""
        with kafka_errors(f"reading {self.topic}"):
            msgs = self.consumer.consume(100, timeout=timeout)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.caught_up.set()
                continue
            key = (msg.key() or b"").decode(errors="replace")
            value = msg.value()
            if value is None:
                self.silences.pop(key, None)
                continue
            try:
                silence = msgspec.json.decode(value, type=Silence)
            except msgspec.MsgspecError as exc:
                refusals.skipped(self.topic, f"{key[:80]!r} at offset {msg.offset()}", exc)
                continue
            self.silences[silence.id] = silence

    def catch_up(self, timeout: float = 30.0) -> None:
        """Block until every silence published before now has been read."""
        deadline = time.monotonic() + timeout
        while not self.caught_up.is_set():
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"could not read the silences topic {self.topic} in {timeout:.0f} s")
            self.poll(0.5)

    def active(self, at: datetime) -> list[Silence]:
        """The silences in force at ``at``, ending soonest first."""
        return sorted((s for s in self.silences.values() if s.active(at)), key=lambda s: (s.ends_at, s.id))

    def muting(self, model: str, policy: str, at: datetime) -> Silence | None:
        """The silence that mutes an alert of ``model`` and ``policy`` at ``at`` (the longest-lasting), or None."""
        found = [s for s in self.silences.values() if s.mutes(model, policy, at)]
        return max(found, key=lambda s: (s.ends_at, s.id)) if found else None

    def close(self) -> None:
        self.consumer.close()
