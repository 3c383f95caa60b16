"""driftline's one error tree (issue #9): every exception class under ``DriftlineError``, documented; Kafka's
exceptions translated at the boundary; the old names and builtin bases still work."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from confluent_kafka import KafkaError, KafkaException
from typer.testing import CliRunner

import driftline
from driftline import errors
from driftline.errors import (
    BrokerError,
    ConfigurationError,
    ContractError,
    DeliveryFailed,
    DriftlineError,
    KafkaRefused,
    KafkaUnavailable,
    TopicError,
)
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import kafka_io, topics
from driftline.streams.kafka.boundary import broker_error, kafka_errors

PACKAGES = ("driftline.detectors", "driftline.schemas", "driftline.serving", "driftline.streams")
DOWN = "127.0.0.1:1"  # nothing listens on port 1: the client fails fast with a transport error


def _modules() -> list[str]:
    names = ["driftline", "driftline.errors"]
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        names += [package, *(m.name for m in pkgutil.walk_packages(path, f"{package}.")
                             if not m.name.endswith("__main__"))]
    return names


MODULES = _modules()
# Every exception class defined (not imported) in a driftline module, by qualified name.
CLASSES = {f"{name}.{cls.__qualname__}": cls for name in MODULES
           for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass)
           if issubclass(cls, BaseException) and cls.__module__ == name}


def test_the_walk_reaches_every_layer():
    assert {"driftline.serving.monitor", "driftline.streams.kafka.kafka_io", "driftline.streams.cli",
            "driftline.streams.references.files", "driftline.detectors.quality"} <= set(MODULES)
    assert {"driftline.errors.DriftlineError", "driftline.errors.MonitorClosed"} <= set(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_exception_class_is_a_documented_driftline_error(name: str):
    cls = CLASSES[name]
    assert issubclass(cls, DriftlineError), f"{name} is outside the tree"
    doc = cls.__doc__ or ""
    assert doc.strip() and "\n" not in doc.strip(), f"{name} needs a one-line docstring"


def test_the_module_docstring_draws_every_class():
    defined = {cls.__name__ for cls in vars(errors).values()
               if isinstance(cls, type) and issubclass(cls, DriftlineError)}
    drawn = {line.strip(" *x+-").split(" ")[0] for line in (errors.__doc__ or "").splitlines()}
    assert defined <= drawn
    assert defined == set(errors.__all__)
    assert set(errors.__all__) <= set(driftline.__all__)


def test_old_names_are_the_tree_s_classes_and_keep_their_builtin_bases():
    from driftline.serving import MonitorClosed
    from driftline.streams.config.model_config import ConfigError
    from driftline.streams.config.settings import SettingsError
    from driftline.streams.kafka.local_broker import BrokerError as LocalFamily
    from driftline.streams.pipeline.decode import BadEventTime, InvalidRecord
    from driftline.streams.references.files import ReferenceFileError

    assert (MonitorClosed, ConfigError, SettingsError, InvalidRecord, BadEventTime, ReferenceFileError,
            kafka_io.DeliveryFailed, LocalFamily) == (
        errors.MonitorClosed, errors.ConfigError, errors.SettingsError, errors.InvalidRecord,
        errors.BadEventTime, errors.ReferenceFileError, DeliveryFailed, BrokerError)
    for cls in (SettingsError, ConfigError, InvalidRecord, BadEventTime, ReferenceFileError):
        assert issubclass(cls, ValueError)
    for cls in (MonitorClosed, DeliveryFailed, errors.LocalBrokerError, errors.StoreError, errors.BacktestError):
        assert issubclass(cls, RuntimeError)
    assert issubclass(errors.LocalBrokerError, LocalFamily)
    with pytest.raises(ValueError, match="bad ts"):
        raise InvalidRecord("bad ts")
    assert BadEventTime("future", "ahead").kind == "future"
    assert ConfigError("f.yaml", ["a", "b"]).problems == ["a", "b"]
    assert issubclass(SettingsError, ConfigurationError) and issubclass(InvalidRecord, ContractError)


@pytest.mark.parametrize(("code", "refused", "expected"), [
    (KafkaError._TRANSPORT, KafkaRefused, KafkaUnavailable),
    (KafkaError._ALL_BROKERS_DOWN, TopicError, KafkaUnavailable),
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaRefused, KafkaRefused),
    (KafkaError.INVALID_REPLICATION_FACTOR, TopicError, TopicError),
])
def test_a_kafka_exception_maps_by_whether_kafka_answered(code: int, refused: type[BrokerError],
                                                         expected: type[BrokerError]):
    original = KafkaException(KafkaError(code, "why"))
    with pytest.raises(expected, match=r"^doing it: why$") as info, kafka_errors("doing it", refused):
        raise original
    assert type(info.value) is expected and info.value.__cause__ is original
    assert type(broker_error(KafkaException("no KafkaError inside"), "x", refused)) is refused


def test_an_unreachable_broker_surfaces_as_kafka_unavailable_with_its_cause():
    with pytest.raises(KafkaUnavailable, match=f"on {DOWN}") as info:
        topics.ensure_topics(Settings(kafka_bootstrap=DOWN), timeout=0.5)
    assert isinstance(info.value.__cause__, KafkaException)
    assert info.value.__cause__.args[0].code() == KafkaError._TRANSPORT


def test_an_invalid_client_setting_surfaces_as_kafka_refused():
    with pytest.raises(KafkaRefused, match=r"bogus\.key") as info:
        kafka_io.producer(DOWN, **{"bogus.key": "1"})
    assert isinstance(info.value.__cause__, KafkaException)


def test_the_cli_turns_a_driftline_error_into_a_message_and_an_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path):
    from driftline.streams.cli import app

    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path))
    monkeypatch.setenv("DRIFTLINE_TOPIC_PARTITIONS", "0")
    result = CliRunner().invoke(app, ["kafka", "status"])
    assert result.exit_code == 2
    assert "error: invalid driftline settings: DRIFTLINE_TOPIC_PARTITIONS" in result.output
    monkeypatch.delenv("DRIFTLINE_TOPIC_PARTITIONS")
    result = CliRunner().invoke(app, ["reference", "set", "--model", "m", "--file", str(tmp_path / "none.jsonl"),
                                      "--effective-from", "0"])
    assert result.exit_code == 1
    assert f"error: {tmp_path / 'none.jsonl'}: no such file" in result.output
