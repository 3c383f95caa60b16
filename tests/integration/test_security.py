"""Kafka over SASL end to end, PII on the wire, and no secret in what a worker prints or serves.

One broker with SASL_PLAINTEXT and SASL_SSL listeners (users for PLAIN and SCRAM-SHA-256/512). The SDK produces
with PLAIN, a raw reader reads the predictions topic with SCRAM-SHA-256, the worker (librdkafka clients and
faust's aiokafka ones) authenticates with SCRAM-SHA-512 and writes windows; a wrong PLAIN password stops a worker
at once; over TLS the broker's certificate is checked against the configured CA.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from driftline.errors import KafkaRefused
from driftline.serving.monitor import Monitor
from driftline.serving.pii import PiiPolicy
from driftline.streams import store
from driftline.streams.config.model_config import ReferenceConfig
from driftline.streams.kafka import kafka_io, topics
from driftline.streams.kafka.local_broker import LocalBroker, free_port
from driftline.streams.kafka.local_sasl import SaslListener
from driftline.streams.kafka.security import KafkaSecurity, check_access, client_config
from driftline.streams.references import topic as references
from driftline.streams.references.book import Reference
from driftline.streams.references.files import ReferenceRows, build
from tests.conftest import Worker, settings_of

pytestmark = pytest.mark.integration
USER, PASSWORD = "svc-driftline", "sasl-pw-8f3e9a1c-never-printed"
CH_PASSWORD = "ch-pw-5b7d20e4-never-printed"
PII_KEY = "pii-hmac-key-2c6f91d8-never-printed"
BASE_MS = 1_767_225_600_000
EMAILS = [f"customer{i}@example.com" for i in range(5)]
N = 600


def certificates(folder: Path) -> None:
    """A test CA (ca.pem), the broker's key and certificate for 127.0.0.1 signed by it (broker.pem), and a CA
    that signed nothing (other-ca.pem)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=driftline {ca}")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    (folder / "broker.pem").write_text((folder / "server.key").read_text() + (folder / "server.pem").read_text())


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    tls = tmp_path_factory.mktemp("tls")
    certificates(tls)
    broker = LocalBroker(tmp_path_factory.mktemp("sasl-kafka"), port=free_port(), heap="512m",
                         sasl=SaslListener(free_port(), {USER: PASSWORD}, free_port(), str(tls / "broker.pem")))
    broker.up()
    yield broker
    broker.down()


def env_for(broker: LocalBroker, home: Path, mechanism: str, password: str = PASSWORD) -> dict[str, str]:
    assert broker.sasl is not None
    home.mkdir(parents=True)
    config = home / "monitoring.yaml"
    config.write_text("defaults:\n  detectors:\n    sequential: {enabled: false}\n")
    prefix = f"s{uuid.uuid4().hex[:10]}."
    values = {"home": home, "kafka_bootstrap": broker.sasl.bootstrap, "topic_prefix": prefix,
              "consumer_group": f"g-{prefix}", "idle_partition_seconds": 1, "metrics_port": free_port(),
              "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": mechanism,
              "kafka_sasl_username": USER, "kafka_sasl_password": password,
              # a ClickHouse password the embedded store ignores: it must still never be printed
              "clickhouse_password": CH_PASSWORD, "clickhouse_user": "driftline",
              # the windows' detectors are what this test needs: the sequential ones' start-up cost is not
              "monitoring_config": config}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update({f"DRIFTLINE_{k.upper()}": str(v) for k, v in values.items()})
    env.update({"PYTHONUNBUFFERED": "1", "DRIFTLINE_PII_KEY": PII_KEY})
    return env


def digest(value: str) -> str:
    return hmac.new(PII_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def read_all(conf: dict[str, object], topic: str, expected: int) -> list[bytes]:
    """Every record of ``topic`` as raw bytes: key, value and headers together."""
    consumer = Consumer({**conf, "group.id": f"raw-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        raw: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(raw) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                headers = b"".join(k.encode() + (v or b"") for k, v in (msg.headers() or []))
                raw.append((msg.key() or b"") + b"\x00" + (msg.value() or b"") + b"\x00" + headers)
        return raw
    finally:
        consumer.close()


def test_sdk_and_worker_over_sasl_with_pii_hashed_on_the_wire(sasl_broker: LocalBroker, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    env = env_for(sasl_broker, tmp_path / "home", "SCRAM-SHA-512")
    settings = settings_of(env)
    topics.ensure_topics(settings)  # the admin client authenticates too
    monkeypatch.setenv("DRIFTLINE_PII_KEY", PII_KEY)
    sdk_log: list[str] = []
    monkeypatch.setattr(logging.getLogger("driftline.serving.kafka"), "handle",
                        lambda record: sdk_log.append(record.getMessage()))
    with Monitor(settings.kafka_bootstrap, model_id="shop", model_version="1", topic_prefix=settings.topic_prefix,
                 security=KafkaSecurity("SASL_PLAINTEXT", "PLAIN", USER, PASSWORD),
                 pii=PiiPolicy(drop=("ssn",), hash=("email",))) as monitor:
        for i in range(N):
            email = EMAILS[i % len(EMAILS)]
            monitor.log_prediction(f"p{i}", {"amount": float(i % 50), "email": email, "ssn": f"078-05-{i:04d}"},
                                   score=(i % 10) / 10, segments={"email": email, "tier": "gold"},
                                   ts=BASE_MS + i * 500)
        assert monitor.flush(30) == 0
    assert monitor.stats().sent == N

    # on the wire: read back with another mechanism, with librdkafka's debug output on
    debug: list[str] = []
    reader = logging.getLogger("test.security.reader")
    reader.setLevel(logging.DEBUG)
    monkeypatch.setattr(reader, "handle", lambda record: debug.append(record.getMessage()))
    conf = client_config(settings_of({**env, "DRIFTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"}),
                         {"debug": "security,broker,protocol", "log_level": 7, "logger": reader})
    raw = read_all(conf, settings.topic(topics.PREDICTIONS), N)
    assert len(raw) == N
    for secret in [*EMAILS, "078-05-"]:
        assert not any(secret.encode() in record for record in raw), secret
    events = [orjson.loads(r.split(b"\x00")[1]) for r in raw]
    assert {e["features"]["email"] for e in events} == {digest(e) for e in EMAILS}  # one digest per address
    assert {e["segments"]["email"] for e in events} == {digest(e) for e in EMAILS}
    # a reference made of what was on the wire: the live windows' digests must be its categories again
    profile, summary = build(ReferenceRows([e["prediction_id"] for e in events], [e["features"] for e in events],
                                           [e["prediction"] for e in events]), ReferenceConfig())
    references.publish(settings, Reference("shop", "1", "wire", "h", "test", 0, profile, summary))
    assert any("SASL" in line for line in debug) and not any(PASSWORD in line for line in debug)

    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_metric("driftline_windows_written_total", 4, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5) as resp:
            metrics_text = resp.read().decode()
        assert worker.terminate() == 0
    finally:
        if worker.alive():
            worker.kill()
    with store.opened(settings.clickhouse_url) as client:
        _, rows = store.query(client, "SELECT feature, metric, value FROM driftline.windows FINAL "
                                      "WHERE model_id = 'shop'")
    assert not any(feature == "ssn" for feature, _, _ in rows)
    unseen = [value for feature, metric, value in rows if (feature, metric) == ("email", "unseen_category_rate")]
    assert len(unseen) >= 4 and set(unseen) == {0.0}  # a categorical feature whose every digest is a known one

    log_text = (tmp_path / "worker.log").read_text()
    for text in (log_text, metrics_text, repr(settings), "\n".join(sdk_log)):
        for secret in (PASSWORD, CH_PASSWORD, PII_KEY):
            assert secret not in text


def test_a_wrong_password_stops_the_worker_at_once_naming_the_refusal(sasl_broker: LocalBroker, tmp_path: Path):
    wrong = "wrong-" + PASSWORD
    worker = Worker(env_for(sasl_broker, tmp_path / "home", "PLAIN", wrong), tmp_path / "worker.log")
    worker.start()
    assert worker.proc is not None
    try:
        # it exits by itself (a hang would wait out librdkafka's retries forever): start-up and one login attempt
        code = worker.proc.wait(60)
    finally:
        if worker.alive():
            worker.kill()
    log_text = (tmp_path / "worker.log").read_text()
    assert code != 0, log_text
    assert f"refused user '{USER}' (PLAIN)" in log_text and "Authentication failed" in log_text, log_text
    assert wrong not in log_text and PASSWORD not in log_text



def test_sasl_over_tls_checks_the_brokers_certificate(sasl_broker: LocalBroker, tmp_path: Path):
    assert sasl_broker.sasl is not None
    tls = Path(sasl_broker.sasl.tls_keystore).parent
    env = {**env_for(sasl_broker, tmp_path / "home", "SCRAM-SHA-256"), "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "DRIFTLINE_KAFKA_BOOTSTRAP": sasl_broker.sasl.tls_bootstrap,
           "DRIFTLINE_KAFKA_SSL_CA_LOCATION": str(tls / "ca.pem")}
    settings = settings_of(env)
    topics.ensure_topics(settings)
    with Monitor(settings.kafka_bootstrap, model_id="tls", model_version="1", topic_prefix=settings.topic_prefix,
                 security=KafkaSecurity.from_settings(settings)) as monitor:
        for i in range(50):
            monitor.log_prediction(f"t{i}", {"x": i}, score=0.5, ts=BASE_MS + i)
        assert monitor.flush(30) == 0
    consumer = kafka_io.consumer(settings, f"tls-{uuid.uuid4().hex}")
    try:
        topic = settings.topic(topics.PREDICTIONS)
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        read: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(read) < 50 and time.monotonic() < deadline:
            read += [msg.value() for msg in consumer.consume(100, timeout=0.5) if msg.error() is None]
    finally:
        consumer.close()
    assert len(read) == 50

    untrusted = settings_of({**env, "DRIFTLINE_KAFKA_SSL_CA_LOCATION": str(tls / "other-ca.pem")})
    with pytest.raises(KafkaRefused, match=r"the TLS handshake with Kafka at .* failed: .*certificate verify failed"):
        check_access(untrusted, timeout=10)
