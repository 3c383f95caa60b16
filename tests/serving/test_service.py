"""The reference inference service over real HTTP (uvicorn on a loopback port), with no Kafka broker reachable.

Typed requests and responses, 422s that name the field (never a 500), the SDK seeing every prediction and
label, the admin promotion's token, the switch visible in /healthz, /metrics and later predictions, and the
switch under concurrent requests.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from driftline.serving.service import data
from driftline.serving.service.app import create_app
from driftline.serving.service.deployment import Outcome
from driftline.serving.service.server import BackgroundServer
from driftline.streams.config.settings import Settings
from driftline.streams.kafka.local_broker import free_port
from tests.serving.service_setup import MODEL, home_with_registry

TOKEN_ENV = "DRIFTLINE_TEST_SERVE_TOKEN"
APPLICANT = {"salary": 52_000.0, "commission": 10_500.0, "age": 41, "elevel": 2, "car": 7, "zipcode": 7,
             "hvalue": 310_000.0, "hyears": 12, "loan": 150_000.0}


@dataclass
class Running:
    app: FastAPI
    http: httpx.Client

    @property
    def service(self):
        return self.app.state.service

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(want + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def _start(home: Path) -> Iterator[Running]:
    settings = Settings(home=home, kafka_bootstrap=f"127.0.0.1:{free_port()}", admin_token_env=TOKEN_ENV)
    app = create_app(settings, listen_for_rollbacks=False)
    with BackgroundServer(app, free_port()) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Running(app, http)


@pytest.fixture(autouse=True)
def _quiet_absent_broker(caplog: pytest.LogCaptureFixture) -> None:
    """No broker is reachable here on purpose: the client's reconnect lines are noise in a failure report."""
    caplog.set_level(logging.CRITICAL, logger="driftline.serving.kafka")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    yield from _start(home_with_registry(tmp_path / "home"))


def test_a_prediction_is_typed_and_logged_through_the_sdk(running: Running):
    given = running.http.post("/predict", json={"prediction_id": "req-1", "features": APPLICANT})
    made_up = running.http.post("/predict", json={"features": {**APPLICANT, "zipcode": 1}})
    assert given.status_code == made_up.status_code == 200
    body = given.json()
    assert body["prediction_id"] == "req-1" and body["model_id"] == MODEL and body["model_version"] == "1"
    assert body["label"] in data.CLASSES and body["segments"] == {"region": "south"}
    assert math.isclose(sum(body["probabilities"].values()), 1.0) and body["score"] == body["probabilities"]["1"]
    assert body["label"] == max(body["probabilities"], key=body["probabilities"].get)
    assert len(made_up.json()["prediction_id"]) == 32 and made_up.json()["segments"] == {"region": "north"}
    assert running.service.monitor.stats().queued == 2  # the broker is away: both wait in the SDK's queue
    assert running.metric("driftline_serving_predictions_total", model_version="1") == 2
    assert running.metric("driftline_serving_sdk_queue_depth") == 2


def test_a_batch_is_answered_in_order_by_one_version(running: Running):
    examples = data.draw(50, seed=3)
    reply = running.http.post("/predict/batch", json={
        "instances": [{"prediction_id": f"b{i}", "features": e.features} for i, e in enumerate(examples)]})
    assert reply.status_code == 200
    predictions = reply.json()["predictions"]
    assert reply.json()["model_version"] == "1" and {p["model_version"] for p in predictions} == {"1"}
    assert [p["prediction_id"] for p in predictions] == [f"b{i}" for i in range(50)]
    assert [p["segments"]["region"] for p in predictions] == [e.region for e in examples]
    # version 1 learnt the labelling rule: nearly every answer is right
    assert sum(p["label"] == e.label for p, e in zip(predictions, examples, strict=True)) >= 45
    assert running.service.monitor.stats().queued == 50


def test_labels_single_and_batch_go_through_the_sdk(running: Running):
    one = running.http.post("/labels", json={"prediction_id": "req-1", "label": "1"})
    many = running.http.post("/labels/batch", json={"labels": [{"prediction_id": f"b{i}", "label": "0"}
                                                               for i in range(5)]})
    assert (one.status_code, one.json()) == (202, {"accepted": 1})
    assert (many.status_code, many.json()) == (202, {"accepted": 5})
    assert running.service.monitor.stats().queued == 6
    assert running.metric("driftline_serving_labels_total") == 6


def _features(**changes: object) -> dict:
    return {"features": {**APPLICANT, **changes}}


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/predict", _features(age="forty"), ["body", "features", "age"]),
    ("/predict", _features(age=41.5), ["body", "features", "age"]),
    ("/predict", _features(zipcode=9), ["body", "features", "zipcode"]),
    ("/predict", _features(car=0), ["body", "features", "car"]),
    ("/predict", _features(salary=-1.0), ["body", "features", "salary"]),
    ("/predict", _features(salary=True), ["body", "features", "salary"]),
    ("/predict", _features(loan=1e300), ["body", "features", "loan"]),
    ("/predict", _features(colour="red"), ["body", "features", "colour"]),
    ("/predict", {"features": {k: v for k, v in APPLICANT.items() if k != "hyears"}}, ["body", "features", "hyears"]),
    ("/predict", {**_features(), "prediction_id": ""}, ["body", "prediction_id"]),
    ("/predict", {**_features(), "prediction_id": "x" * 129}, ["body", "prediction_id"]),
    ("/predict", {}, ["body", "features"]),
    ("/predict", [APPLICANT], ["body"]),
    ("/predict/batch", {"instances": []}, ["body", "instances"]),
    ("/predict/batch", {"instances": [_features()] * 1001}, ["body", "instances"]),
    ("/predict/batch", {"instances": [_features(), _features(elevel=5)]},
     ["body", "instances", 1, "features", "elevel"]),
    ("/labels", {"prediction_id": "p", "label": "2"}, ["body", "label"]),
    ("/labels", {"prediction_id": "p", "label": 1}, ["body", "label"]),
    ("/labels", {"label": "1"}, ["body", "prediction_id"]),
    ("/labels/batch", {"labels": [{"prediction_id": "p"}]}, ["body", "labels", 0, "label"]),
    ("/admin/promote", {"version": "../../etc"}, ["body", "version"]),
])
def test_a_bad_request_is_a_422_naming_the_field(running: Running, path: str, body: object, field: list):
    reply = running.http.post(path, json=body)
    assert reply.status_code == 422, reply.text
    assert field in [e["loc"] for e in reply.json()["detail"]]
    assert running.service.monitor.stats().queued == 0  # nothing half-logged


@pytest.mark.parametrize("raw", [b'{"features": {"salary": NaN}}', b'{"features": {"salary": Infinity}}',
                                 b"not json", b"", b'{"features": '])
def test_a_body_that_is_not_json_or_holds_nan_is_a_422_not_a_500(running: Running, raw: bytes):
    reply = running.http.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"][0]["loc"][0] == "body"


def test_a_body_that_is_not_utf8_is_a_400(running: Running):
    reply = running.http.post("/predict", content='{"prediction_id": "\xe9"}'.encode("latin-1"),
                              headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "parsing the body" in reply.json()["detail"]


def test_healthz_and_metrics_show_the_version_serving(running: Running):
    health = running.http.get("/healthz").json()
    registry = running.service.registry
    assert health["model_version"] == "1" and health["versions"] == ["1", "2"]
    assert health["sha256"] == registry.metadata("1")["sha256"] and health["rollback_listener"] == "off"
    assert health["sdk"] == {"sent": 0, "failed": 0, "dropped": 0, "queued": 0}
    running.http.get("/healthz")
    assert running.metric("driftline_serving_active_version", model_version="1") == 1
    assert running.metric("driftline_serving_active_version", model_version="2") == 0
    assert running.metric("driftline_serving_request_seconds_count", endpoint="/healthz", status="200") == 2
    assert 'driftline_serving_request_seconds_bucket{endpoint="/healthz",le="0.005",status="200"}' in \
        running.http.get("/metrics").text


def test_promotion_needs_the_token(running: Running, monkeypatch: pytest.MonkeyPatch):
    disabled = running.http.post("/admin/promote", json={"version": "2"})
    assert disabled.status_code == 403 and TOKEN_ENV in disabled.json()["detail"]
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic czNjcmV0LXRva2Vu"},
                    {"authorization": "Bearer s3cret-token-and-more"}):
        reply = running.http.post("/admin/promote", json={"version": "2"}, headers=headers)
        assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer", headers
    assert running.http.get("/healthz").json()["model_version"] == "1"
    assert running.metric("driftline_serving_promotions_total", outcome="unauthorized") == 4


def test_a_promotion_switches_versions_visibly(running: Running, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(TOKEN_ENV, "s3cret-token")
    auth = {"authorization": "Bearer s3cret-token"}
    reply = running.http.post("/admin/promote", json={"version": "2"}, headers=auth)
    assert reply.json() == {"outcome": "applied", "model_version": "2", "previous_version": "1"}
    again = running.http.post("/admin/promote", json={"version": "2"}, headers=auth)
    assert again.json()["outcome"] == "already_active"
    unknown = running.http.post("/admin/promote", json={"version": "7"}, headers=auth)
    assert unknown.status_code == 404 and "7" in unknown.json()["detail"]
    health = running.http.get("/healthz").json()
    assert health["model_version"] == "2" and health["sha256"] == running.service.registry.metadata("2")["sha256"]
    assert running.http.post("/predict", json=_features()).json()["model_version"] == "2"
    assert running.metric("driftline_serving_active_version", model_version="2") == 1
    assert running.metric("driftline_serving_active_version", model_version="1") == 0
    assert running.metric("driftline_serving_version_switches_total", trigger="promote") == 1
    assert running.metric("driftline_serving_promotions_total", outcome="unknown_version") == 1


def test_version_2_is_wrong_on_the_south_region_only(running: Running, monkeypatch: pytest.MonkeyPatch):
    examples = data.draw(600, seed=11)
    body = {"instances": [{"features": e.features} for e in examples]}

    def accuracy_by_region() -> dict[str, float]:
        answers = running.http.post("/predict/batch", json=body).json()["predictions"]
        right: dict[str, list[bool]] = {}
        for answer, e in zip(answers, examples, strict=True):
            right.setdefault(e.region, []).append(answer["label"] == e.label)
        return {r: sum(v) / len(v) for r, v in right.items()}

    v1 = accuracy_by_region()
    monkeypatch.setenv(TOKEN_ENV, "t")
    running.http.post("/admin/promote", json={"version": "2"}, headers={"authorization": "Bearer t"})
    v2 = accuracy_by_region()
    assert min(v1.values()) > 0.9
    assert v2["north"] > 0.9 and v2["central"] > 0.9 and v2["south"] < 0.3


def test_the_version_survives_a_restart(tmp_path: Path):
    home = home_with_registry(tmp_path / "home")
    for running in _start(home):
        assert running.service.deployment.switch("2", trigger="promote", reason="test") is Outcome.APPLIED
    for running in _start(home):
        assert running.http.get("/healthz").json()["model_version"] == "2"


def test_a_switch_under_concurrent_requests_fails_none_and_splits_them_old_then_new(running: Running):
    seen: dict[int, list[tuple[int, str]]] = {}
    stop = threading.Event()
    switched = threading.Event()

    def client(n: int) -> None:
        answers = seen.setdefault(n, [])
        with httpx.Client(base_url=str(running.http.base_url), timeout=30) as http:
            while not stop.is_set():
                reply = http.post("/predict", json=_features())
                answers.append((reply.status_code, reply.json()["model_version"] if reply.is_success else reply.text))
                if len(answers) == 20:
                    switched.wait(30)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while sum(len(a) for a in list(seen.values())) < 60 and time.monotonic() < deadline:
        stop.wait(0.01)
    assert running.service.deployment.switch("2", trigger="promote", reason="test") is Outcome.APPLIED
    switched.set()
    while min((len(a) for a in list(seen.values())), default=0) < 40 and time.monotonic() < deadline:
        stop.wait(0.01)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(seen) == 4
    for answers in seen.values():
        assert {status for status, _ in answers} == {200}
        versions = [version for _, version in answers]
        first_new = versions.index("2")
        assert set(versions[:first_new]) == {"1"} and set(versions[first_new:]) == {"2"}, versions
    assert running.service.monitor.stats().queued == sum(len(a) for a in seen.values())


def test_the_kafka_clients_log_through_python_logging_not_stderr(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                 capfd: pytest.CaptureFixture[str]):
    caplog.set_level(logging.INFO, logger="driftline.serving.kafka")
    settings = Settings(home=home_with_registry(tmp_path / "home"), kafka_bootstrap=f"127.0.0.1:{free_port()}")
    app = create_app(settings, instance="logs")  # the SDK producer and the rollback consumer, no broker
    with BackgroundServer(app, free_port()) as server, httpx.Client(base_url=server.url) as http:
        deadline = time.monotonic() + 30
        while {"producer", "consumer"} - {c for r in caplog.records for c in ("producer", "consumer")
                                           if f"rdkafka#{c}" in r.getMessage()}:
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            http.post("/predict", json=_features())  # each log_* polls the producer, which hands its lines over
            time.sleep(0.2)
    assert any("FAIL" in r.getMessage() and r.levelno >= logging.WARNING for r in caplog.records)
    assert "%3|" not in capfd.readouterr().err  # nothing raw from librdkafka on the terminal
