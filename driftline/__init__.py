"""driftline: real-time monitoring of machine-learning models in production, on an event stream.

The repository's folders are this package's subpackages: ``driftline.serving`` (the producer SDK),
``driftline.detectors`` (pure statistics), ``driftline.streams`` (the stream processor) and
``driftline.schemas`` (the contracts). ``from driftline import Monitor`` is the SDK's short name;
``driftline.errors`` holds every exception driftline raises on purpose, rooted at ``DriftlineError`` and
exported here too.
"""

from driftline.errors import (
    BacktestError,
    BadEventTime,
    BrokerError,
    ConfigError,
    ConfigurationError,
    ContractError,
    DeliveryFailed,
    DriftlineError,
    InvalidRecord,
    KafkaRefused,
    KafkaUnavailable,
    LocalBrokerError,
    MonitorClosed,
    ReferenceFileError,
    SettingsError,
    StoreError,
    TopicError,
)
from driftline.serving import Monitor, MonitorStats

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
    "Monitor",
    "MonitorClosed",
    "MonitorStats",
    "ReferenceFileError",
    "SettingsError",
    "StoreError",
    "TopicError",
]
