"""The reference service on the real broker: its predictions and labels reach the topics, and driftline's
rollback CloudEvents switch it, once per id, only to a registered version, under concurrent requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from driftline.serving.service import data
from driftline.serving.service.app import create_app
from driftline.serving.service.registry import DeploymentState, Registry
from driftline.serving.service.server import BackgroundServer
from driftline.streams.actions.events import CLOUDEVENTS_CONTENT_TYPE
from driftline.streams.kafka import topics
from driftline.streams.kafka.local_broker import free_port
from tests.conftest import settings_of
from tests.integration.synthetic import outside_producer
from tests.integration.test_actions import Topic
from tests.serving.service_setup import MODEL, home_with_registry, rollback_event

pytestmark = pytest.mark.integration


def _metric(http: httpx.Client, name: str, **labels: str) -> float:
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_rollback_events_switch_the_service_once_and_only_to_a_known_version(env_for, tmp_path: Path) -> None:
    settings = settings_of(env_for(home=home_with_registry(tmp_path / "home")))
    topics.ensure_topics(settings)
    Registry(settings.home / "registry", MODEL).write_state(DeploymentState("2"), "released")  # v2 serves
    rollback_topic = settings.topic(topics.ROLLBACK)
    producer = outside_producer(settings.kafka_bootstrap)

    def publish(value: bytes, key: str = MODEL) -> None:
        producer.produce(rollback_topic, key=key.encode(), value=value,
                         headers=[("content-type", CLOUDEVENTS_CONTENT_TYPE.encode())])
        assert producer.flush(30) == 0

    app = create_app(settings, instance="it")
    service = app.state.service
    with BackgroundServer(app, free_port()) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        _wait(service.listener.ready.is_set, "the rollback consumer's assignment")
        assert http.get("/healthz").json()["rollback_listener"] == "listening"
        answers: dict[int, list[tuple[int, str]]] = {}
        stop = threading.Event()
        examples = data.draw(200, seed=21)

        def client(n: int) -> None:
            mine = answers.setdefault(n, [])
            with httpx.Client(base_url=server.url, timeout=30) as own:
                while not stop.is_set():
                    e = examples[len(mine) % len(examples)]
                    reply = own.post("/predict", json={"prediction_id": f"c{n}-{len(mine)}", "features": e.features})
                    mine.append((reply.status_code, reply.json()["model_version"] if reply.is_success else reply.text))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        _wait(lambda: min((len(a) for a in list(answers.values())), default=0) >= 20, "traffic on version 2")
        # the performance policy's rollback of v2 to v1, as the policy engine publishes it
        event = orjson.dumps(rollback_event("1", "2"))
        publish(b"{not json")  # a broken record first: logged, counted, skipped
        publish(orjson.dumps(rollback_event("2", "1", model_id="churn")), key="churn")
        publish(event)
        _wait(lambda: http.get("/healthz").json()["model_version"] == "1", "the switch to version 1")
        seen_at_switch = {n: len(a) for n, a in answers.items()}
        _wait(lambda: all(len(answers[n]) >= seen_at_switch[n] + 20 for n in answers), "traffic on version 1")
        stop.set()
        for t in threads:
            t.join(30)
        for n, mine in answers.items():
            assert {status for status, _ in mine} == {200}, n
            versions = [version for _, version in mine]
            first_new = versions.index("1")
            assert first_new >= 20 and set(versions[:first_new]) == {"2"} and set(versions[first_new:]) == {"1"}

        publish(event)  # the same decision re-sent (a crash before the commit): acted on once
        publish(orjson.dumps(rollback_event("7", "1", window=9)))  # a version this service never had
        _wait(lambda: _metric(http, "driftline_serving_rollbacks_total", outcome="unknown_version") == 1,
              "the unknown version's refusal")
        assert http.get("/healthz").json()["model_version"] == "1"
        assert _metric(http, "driftline_serving_rollbacks_total", outcome="applied") == 1
        assert _metric(http, "driftline_serving_rollbacks_total", outcome="duplicate") == 1
        assert _metric(http, "driftline_serving_rollbacks_total", outcome="malformed") == 1
        assert _metric(http, "driftline_serving_rollbacks_total", outcome="other_model") == 1
        assert _metric(http, "driftline_serving_version_switches_total", trigger="rollback") == 1
        assert _metric(http, "driftline_serving_active_version", model_version="1") == 1
        assert service.listener._thread.is_alive()

        label = http.post("/labels", json={"prediction_id": "c0-0", "label": examples[0].label})
        assert label.status_code == 202
    total = sum(len(a) for a in answers.values())
    assert service.monitor.stats().sent == total + 1  # closed at shutdown: every prediction and the label delivered

    predictions = Topic(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS)).wait(total)
    assert len(predictions) == total
    by_id = {p["prediction_id"]: p for p in predictions}
    for n, mine in answers.items():
        assert [by_id[f"c{n}-{i}"]["model_version"] for i in range(len(mine))] == [v for _, v in mine]
    first = by_id["c0-0"]
    assert first["model_id"] == MODEL and first["segments"] == {"region": examples[0].region}
    assert set(first["prediction"]) == {"label", "score", "probabilities"}
    assert first["features"]["zipcode"] == str(examples[0].features["zipcode"])  # categorical, as a string
    assert Topic(settings.kafka_bootstrap, settings.topic(topics.LABELS)).wait(1)[0]["label"] == examples[0].label


def test_a_restarted_service_sees_the_rollbacks_published_while_it_was_down(env_for, tmp_path: Path) -> None:
    settings = settings_of(env_for(home=home_with_registry(tmp_path / "home")))
    topics.ensure_topics(settings)
    Registry(settings.home / "registry", MODEL).write_state(DeploymentState("2"), "released")
    app = create_app(settings, instance="restart", monitoring=False)
    with BackgroundServer(app, free_port()):
        _wait(app.state.service.listener.ready.is_set, "the first assignment")  # the group's position is committed
    producer = outside_producer(settings.kafka_bootstrap)
    producer.produce(settings.topic(topics.ROLLBACK), key=MODEL.encode(), value=orjson.dumps(rollback_event("1")))
    assert producer.flush(30) == 0
    app = create_app(settings, instance="restart", monitoring=False)
    with BackgroundServer(app, free_port()) as server, httpx.Client(base_url=server.url) as http:
        _wait(lambda: http.get("/healthz").json()["model_version"] == "1", "the rollback published while down")
