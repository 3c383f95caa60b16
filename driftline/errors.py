"""Every exception driftline raises on purpose, in one tree; ``except DriftlineError`` catches them all.

The tree: ``x`` marks a family, ``+`` and ``-`` the classes under it. In brackets, the builtin base a family
shares with its classes, kept so that code catching the old classes' bases (``except ValueError`` around
``load_settings()``) still catches them:

* DriftlineError
  x ConfigurationError [ValueError]
    + SettingsError
    + ConfigError
  x ContractError [ValueError]
    + InvalidRecord
      - BadEventTime
    + ReferenceFileError
  x BrokerError [RuntimeError]
    + KafkaUnavailable
    + KafkaRefused
    + TopicError
    + DeliveryFailed
    + LocalBrokerError
  x StoreError [RuntimeError]
  x BacktestError [RuntimeError]
  x MonitorClosed [RuntimeError]

Errors of the layers below are translated where driftline calls them, with the original kept as
``__cause__``: confluent-kafka's ``KafkaException`` becomes a ``BrokerError``
(``driftline.streams.kafka.boundary``), clickhouse-connect's errors a ``StoreError``
(``driftline.streams.store``). Detectors and ``WindowSpec`` stay pure library code: a bad argument there is
a plain ``ValueError``.

This module imports nothing from driftline or its dependencies, so the SDK (``driftline.serving``) can
raise from it without loading the stream processor.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "BacktestError",
    "BadEventTime",
    "BrokerError",
    "ConfigError",
    "ConfigurationError",
    "ContractError",
    "DeliveryFailed",
    "DriftlineError",
    "InvalidRecord",
    "KafkaRefused",
    "KafkaUnavailable",
    "LocalBrokerError",
    "MonitorClosed",
    "ReferenceFileError",
    "SettingsError",
    "StoreError",
    "TopicError",
]


class DriftlineError(Exception):
    """The root of every error driftline raises on purpose."""


# -- configuration -------------------------------------------------------------------------------------------


class ConfigurationError(DriftlineError, ValueError):
    """driftline's settings or a model monitoring configuration cannot be used."""


class SettingsError(ConfigurationError):
    """A setting is missing or invalid; the message names the variable."""


class ConfigError(ConfigurationError):
    """The model configuration file cannot be used; each problem names the file and the key path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


# -- data that breaks the contract ---------------------------------------------------------------------------


class ContractError(DriftlineError, ValueError):
    """Data handed to driftline (an event record, a reference file) breaks its contract."""


class InvalidRecord(ContractError):
    """A record breaks the contract; the message is the reason written to the dead-letter header."""


class BadEventTime(InvalidRecord):
    """An event time too far ahead of its reference time, or too old; ``kind`` is ``future`` or ``too_old``."""

    def __init__(self, kind: Literal["future", "too_old"], reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


class ReferenceFileError(ContractError):
    """The reference file cannot be read or holds no usable rows; the message says which and where."""


# -- Kafka ---------------------------------------------------------------------------------------------------


class BrokerError(DriftlineError, RuntimeError):
    """Kafka, or the local broker driftline runs, failed an operation driftline needed."""


class KafkaUnavailable(BrokerError):
    """No Kafka broker answered in time: the bootstrap address is wrong or the cluster is down."""


class KafkaRefused(BrokerError):
    """Kafka or its client refused a request: an invalid client setting, an authorization or a policy error."""


class TopicError(BrokerError):
    """A topic driftline needs could not be created, has no leader, or is laid out differently than needed."""


class DeliveryFailed(BrokerError):
    """A record the committed offsets depend on was not delivered: stop, and replay from the last commit."""


class LocalBrokerError(BrokerError):
    """The local broker could not be installed, started or stopped; the message says what to do."""


# -- the rest ------------------------------------------------------------------------------------------------


class StoreError(DriftlineError, RuntimeError):
    """The ClickHouse store could not be opened, migrated, queried or written."""


class BacktestError(DriftlineError, RuntimeError):
    """A backtest cannot run: its range is empty or the topics it replays cannot be read."""


class MonitorClosed(DriftlineError, RuntimeError):
    """A ``log_*`` call reached a ``Monitor`` after its ``close()``."""
