"""The Kafka boundary: confluent-kafka's ``KafkaException`` becomes a ``BrokerError`` subclass here, and
librdkafka's own log lines become Python log records (``KAFKA_LOG``).

driftline's Kafka helpers run their client calls inside ``kafka_errors`` so that a caller only ever sees
the driftline error tree, with confluent-kafka's exception kept as ``__cause__``. Every client driftline makes
sets ``"logger": KAFKA_LOG``, so connection failures and retries go through logging (the application decides
where they land) instead of raw ``%3|...|FAIL|...`` lines on stderr.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaError, KafkaException

from driftline.errors import BrokerError, KafkaRefused, KafkaUnavailable

KAFKA_LOG = logging.getLogger("driftline.kafka")
# librdkafka's codes for "nobody answered" (local ones start with an underscore), as opposed to a broker
# that answered with a refusal: the first is fixed by starting or reaching Kafka, the second by a change.
UNREACHABLE = frozenset({
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE, KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT, KafkaError.BROKER_NOT_AVAILABLE, KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
})


def broker_error(exc: KafkaException, doing: str, refused: type[BrokerError] = KafkaRefused) -> BrokerError:
    """The driftline error for ``exc`` raised while ``doing``; raise it ``from exc``.

    ``refused`` is the class for an answer that is not "unreachable", e.g. ``TopicError`` while creating
    topics.

    >>> err = broker_error(KafkaException(KafkaError(KafkaError._TRANSPORT, "down")), "listing topics")
    >>> type(err).__name__, str(err)
    ('KafkaUnavailable', 'listing topics: down')
    """
    first = exc.args[0] if exc.args else None
    if not isinstance(first, KafkaError):
        return refused(f"{doing}: {exc}")
    cls = KafkaUnavailable if first.code() in UNREACHABLE else refused
    return cls(f"{doing}: {first.str()}")


@contextmanager
def kafka_errors(doing: str, refused: type[BrokerError] = KafkaRefused) -> Iterator[None]:
    """Translate a ``KafkaException`` raised in the block with `broker_error`; driftline errors pass as they are."""
    try:
        yield
    except KafkaException as exc:
        raise broker_error(exc, doing, refused) from exc
