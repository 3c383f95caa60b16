"""Kafka security settings: the one mapping to librdkafka, its validation, and secrets kept out of text."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import faust
import pytest
from confluent_kafka import Producer
from pydantic import SecretStr

from driftline.errors import SettingsError
from driftline.serving.monitor import Monitor
from driftline.streams.config.settings import Settings, load_settings
from driftline.streams.kafka import kafka_io
from driftline.streams.kafka.security import KafkaSecurity, client_config, faust_credentials, kafka_security

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-6c1f0e2b-never-printed"
SASL = {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "svc-driftline", "kafka_sasl_password": PASSWORD}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in [k for k in os.environ if k.startswith("DRIFTLINE_")]:
        monkeypatch.delenv(key)
    return monkeypatch


def pem(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return str(path)


def test_plaintext_is_the_default_and_adds_nothing_but_the_protocol():
    assert kafka_security(Settings()) == {"security.protocol": "PLAINTEXT"}
    assert client_config(Settings(kafka_bootstrap="k:9092"), {"group.id": "g"}) == {
        "bootstrap.servers": "k:9092", "security.protocol": "PLAINTEXT", "group.id": "g"}


def test_sasl_settings_map_to_the_librdkafka_properties():
    assert kafka_security(Settings(**SASL)) == {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc-driftline", "sasl.password": PASSWORD}


def test_sasl_ssl_with_mutual_tls_maps_every_file_and_the_host_check(tmp_path: Path):
    ca, cert, key = pem(tmp_path, "ca.pem"), pem(tmp_path, "client.pem"), pem(tmp_path, "client.key")
    settings = Settings(**{**SASL, "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN"},
                        kafka_ssl_ca_location=ca, kafka_ssl_certificate_location=cert, kafka_ssl_key_location=key,
                        kafka_ssl_key_password="key-pass", kafka_ssl_verify_hostname=False)
    assert kafka_security(settings) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "svc-driftline",
        "sasl.password": PASSWORD, "ssl.endpoint.identification.algorithm": "none", "ssl.ca.location": ca,
        "ssl.certificate.location": cert, "ssl.key.location": key, "ssl.key.password": "key-pass"}
    assert KafkaSecurity("SSL").config() == {"security.protocol": "SSL",
                                             "ssl.endpoint.identification.algorithm": "https"}


def test_every_worker_client_gets_the_security_properties():
    conf = client_config(Settings(**SASL), {})
    producer = kafka_io.producer(Settings(**SASL))  # librdkafka accepts the mapping as it is
    producer.flush(0)
    assert conf["sasl.password"] == PASSWORD and conf["security.protocol"] == "SASL_PLAINTEXT"


@pytest.mark.parametrize(("env", "named"), [
    ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DRIFTLINE_KAFKA_SASL_PASSWORD": PASSWORD},
     "DRIFTLINE_KAFKA_SASL_USERNAME: required with security protocol SASL_PLAINTEXT"),
    ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "DRIFTLINE_KAFKA_SASL_USERNAME": "u"},
     "DRIFTLINE_KAFKA_SASL_PASSWORD: required with security protocol SASL_SSL"),
    ({"DRIFTLINE_KAFKA_SASL_USERNAME": "u", "DRIFTLINE_KAFKA_SASL_PASSWORD": PASSWORD},
     "DRIFTLINE_KAFKA_SASL_USERNAME: given, but security protocol PLAINTEXT does not authenticate with SASL"),
    ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SSL", "DRIFTLINE_KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"},
     "DRIFTLINE_KAFKA_SSL_CA_LOCATION: no such file: /nonexistent/ca.pem"),
    ({"DRIFTLINE_KAFKA_SSL_CA_LOCATION": "/etc/hostname"},
     "DRIFTLINE_KAFKA_SSL_CA_LOCATION: given, but security protocol PLAINTEXT does not use TLS"),
    ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "sasl"}, "DRIFTLINE_KAFKA_SECURITY_PROTOCOL: Input should be"),
    ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DRIFTLINE_KAFKA_SASL_MECHANISM": "GSSAPI"},
     "DRIFTLINE_KAFKA_SASL_MECHANISM: Input should be"),
])
def test_a_bad_combination_stops_the_start_naming_the_variable(clean_env: pytest.MonkeyPatch, env: dict[str, str],
                                                               named: str):
    for key, value in env.items():
        clean_env.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value)
    assert PASSWORD not in str(info.value)


def test_a_client_certificate_needs_its_key(tmp_path: Path):
    problems = KafkaSecurity("SSL", ssl_certificate_location=pem(tmp_path, "c.pem")).problems()
    assert problems == [("ssl_key_location", "a client certificate needs both its certificate and its key")]


def test_secrets_stay_out_of_reprs_and_setting_errors(clean_env: pytest.MonkeyPatch):
    settings = Settings(**SASL, kafka_ssl_key_password="key-" + PASSWORD, clickhouse_password="ch-" + PASSWORD)
    for text in (repr(settings), str(settings), repr(KafkaSecurity.from_settings(settings)),
                 repr(settings.model_dump()), repr(KafkaSecurity("SASL_SSL", "PLAIN", "u", PASSWORD))):
        assert PASSWORD not in text
    # a bad setting next to a secret: the error lists the bad one, never the secret's value
    clean_env.setenv("DRIFTLINE_KAFKA_SASL_PASSWORD", PASSWORD)
    clean_env.setenv("DRIFTLINE_CLICKHOUSE_PASSWORD", "ch-" + PASSWORD)
    clean_env.setenv("DRIFTLINE_TOPIC_PARTITIONS", "0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "DRIFTLINE_TOPIC_PARTITIONS" in str(info.value) and PASSWORD not in str(info.value)


def test_a_malformed_secret_is_named_but_not_echoed(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    config = tmp_path / "driftline.toml"
    config.write_text("kafka_sasl_password = 918273645546372819\n")  # a number where text belongs
    clean_env.setenv("DRIFTLINE_CONFIG", str(config))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "DRIFTLINE_KAFKA_SASL_PASSWORD" in str(info.value) and "918273645546372819" not in str(info.value)


def test_librdkafka_debug_lines_never_carry_the_password():
    lines: list[str] = []
    logger = logging.getLogger("test.kafka.debug")
    logger.setLevel(logging.DEBUG)
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    producer = Producer(client_config(Settings(**SASL, kafka_bootstrap="127.0.0.1:1"),
                                      {"debug": "all", "log_level": 7, "logger": logger}))
    for _ in range(5):
        producer.poll(0.05)
    assert any("SCRAM-SHA-512" in line for line in lines)  # the debug output did cover the SASL setup
    assert not any(PASSWORD in line for line in lines)


def test_faust_gets_the_same_credentials():
    creds = faust_credentials(Settings(**SASL))
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("svc-driftline", PASSWORD, "SCRAM-SHA-512")
    assert PASSWORD not in repr(creds)
    assert faust_credentials(Settings()) is None
    assert isinstance(faust_credentials(Settings(kafka_security_protocol="SSL")), faust.SSLCredentials)


def test_the_sdk_checks_its_security_options_at_construction():
    with pytest.raises(ValueError, match=r"^security\.sasl_username: required with security protocol SASL_SSL$"):
        Monitor("127.0.0.1:1", model_id="m", model_version="1",
                security=KafkaSecurity("SASL_SSL", sasl_password=SecretStr(PASSWORD)))


def test_no_kafka_client_is_built_without_the_security_rule():
    """Every module that makes a confluent-kafka client takes its security from security.py (directly, through
    kafka_io, or KafkaSecurity in the SDK); the local test brokers' own readiness probes are the plaintext ones."""
    makes_client = re.compile(r"\b(Consumer|Producer|AdminClient)\(")
    through_the_rule = re.compile(r"client_config\(|KafkaSecurity|kafka_io\.(producer|consumer)\(")
    unchecked = []
    for path in [*ROOT.joinpath("streams").rglob("*.py"), *ROOT.joinpath("serving").rglob("*.py")]:
        text = path.read_text()
        if makes_client.search(text) and not through_the_rule.search(text) and not path.name.startswith("local_"):
            unchecked.append(str(path.relative_to(ROOT)))
    assert unchecked == []
