"""The alert dispatcher end to end: alert.v1 records on a real broker, real HTTP receivers that fail for a while,
outcomes on the alert-deliveries topic, a SIGKILL mid-delivery, and silences made with the CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from typer.testing import CliRunner

from driftline import schemas
from driftline.streams.actions.commands import alerts_app
from driftline.streams.actions.decisions import AlertTransition
from driftline.streams.actions.dispatch import metrics
from driftline.streams.actions.dispatch.dispatcher import Dispatcher
from driftline.streams.actions.silences import UnknownSilence
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import topics
from tests.actions.test_dispatch_bodies import alert_doc, encoded
from tests.actions.test_sender import Receiver, Reply
from tests.conftest import ROOT, settings_of

pytestmark = pytest.mark.integration

A = "a" * 32
B = "b" * 32
C = "c" * 32
SECRETS = {"PD_KEY": "pd-integration-key", "HOOK_SECRET": "hook-secret", "BAD_SECRET": "bad-secret"}
DELIVERY = jsonschema.Draft202012Validator(schemas.load("alert-delivery.v1"),
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
FAST = {"retry_base_seconds": 0.05, "retry_max_delay_seconds": 1.5, "max_retry_seconds": 120, "timeout_seconds": 3}


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[int, bytes], Reply]], Receiver]]:
    started: list[Receiver] = []

    def make(script: Callable[[int, bytes], Reply]) -> Receiver:
        started.append(Receiver(script).start())
        return started[-1]

    yield make
    for receiver in started:
        receiver.stop()


def env_with_routes(env_for, routes: list[dict[str, Any]]) -> dict[str, str]:
    return {**env_for(alert_routes=json.dumps(routes)), **SECRETS}


def publish(settings: Settings, docs: list[dict[str, Any] | bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "partitioner": topics.PARTITIONER})
    for doc in docs:
        if isinstance(doc, bytes):
            producer.produce(settings.topic(topics.ALERTS), key=A.encode(), value=doc)
        else:
            producer.produce(settings.topic(topics.ALERTS), key=doc["fingerprint"].encode(), value=encoded(doc))
    assert producer.flush(30) == 0


def outcomes(settings: Settings, at_least: int, timeout: float = 90.0,
             alive: Callable[[], bool] = lambda: True) -> list[dict[str, Any]]:
    """Every outcome on the alert-deliveries topic once there are ``at_least``, each checked against the schema."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"read-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([settings.topic(topics.ALERT_DELIVERIES)])
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and alive():
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is None:
                    doc = json.loads(msg.value())
                    DELIVERY.validate(doc)
                    assert msg.key() == doc["fingerprint"].encode()
                    found.append(doc)
            if len(found) >= at_least:
                for msg in consumer.consume(100, timeout=1.0):  # nothing more than expected may follow
                    if msg.error() is None:
                        found.append(json.loads(msg.value()))
                return found
    finally:
        consumer.close()
    raise AssertionError(f"{len(found)} of {at_least} outcomes arrived: {found}")


def deduped(items: list[Any]) -> list[Any]:
    """A re-sent request (a retry, or a restart's) repeats the one before it: keep one of each run."""
    return [x for i, x in enumerate(items) if i == 0 or items[i - 1] != x]


def pagerduty_events(receiver: Receiver) -> dict[str, list[tuple[str, str]]]:
    """(event_action, event_id) per dedup_key, in the order the receiver got them."""
    per_key: dict[str, list[tuple[str, str]]] = {}
    for _t, _h, body in receiver.requests:
        event = json.loads(body)
        assert event["routing_key"] == SECRETS["PD_KEY"]
        per_key.setdefault(event["dedup_key"], []).append((event["event_action"],
                                                           event["payload"]["custom_details"]["event_id"]))
    return per_key


def run_in_thread(settings: Settings, env: dict[str, str]) -> tuple[threading.Event, threading.Thread]:
    halt = threading.Event()
    dispatcher = Dispatcher(settings, halt, environ=env)
    thread = threading.Thread(target=dispatcher.run, daemon=True)
    thread.start()
    return halt, thread


def incident(fingerprint: str) -> list[dict[str, Any]]:
    return [alert_doc("triggered", 0, fingerprint), alert_doc("updated", 1, fingerprint),
            alert_doc("resolved", 2, fingerprint)]


def test_retried_deliveries_arrive_in_order_a_400_fails_once_and_offsets_follow_outcomes(env_for, serve):
    pd = serve(lambda n, _b: [(500, {}, b"oops"), (429, {"Retry-After": "1"}, b"slow")][n] if n < 2
               else (202, {}, b'{"status":"success"}'))
    hook = serve(lambda n, _b: (503, {}, b"busy") if n < 2 else (202, {}, b"ok"))
    bad = serve(lambda _n, _b: (400, {}, b'{"status":"invalid event","message":"Event object is invalid"}'))
    env = env_with_routes(env_for, [
        {"name": "pd", "kind": "pagerduty", "url": pd.url, "routing_key_env": "PD_KEY", "models": ["fraud"], **FAST},
        {"name": "hook", "kind": "webhook", "url": hook.url, "secret_env": "HOOK_SECRET", "models": ["fr*"], **FAST},
        {"name": "bad", "kind": "webhook", "url": bad.url, "secret_env": "BAD_SECRET", "models": ["broken"], **FAST},
    ])
    settings = settings_of(env)
    topics.ensure_topics(settings)
    a, b = incident(A), incident(B)
    muted = alert_doc("triggered", 0, C, notify=False)
    broken = alert_doc("triggered", 0, C, model_id="broken", event_id=f"{C}-x/0")
    malformed_before = metrics.MALFORMED._value.get()
    publish(settings, [a[0], b[0], a[1], b"not an alert", muted, b[2], a[2], broken])
    halt, thread = run_in_thread(settings, env)
    try:
        found = outcomes(settings, 2 * 5 + 1)
    finally:
        halt.set()
        thread.join(30)
    assert not thread.is_alive()
    assert len(found) == 11 and {o["event_id"] for o in found} == {d["event_id"] for d in [*a, b[0], b[2], broken]}
    assert all(o["outcome"] == "delivered" for o in found if o["route"] != "bad")
    failed = [o for o in found if o["route"] == "bad"]
    assert [(o["outcome"], o["status"], o["attempts"]) for o in failed] == [("failed", 400, 1)]
    assert "Event object is invalid" in failed[0]["response"] and len(bad.requests) == 1
    assert sum(o["attempts"] for o in found if o["route"] == "pd") == len(pd.requests) == 7
    # PagerDuty got every trigger, update and resolve, in order per dedup_key
    assert {k: deduped(v) for k, v in pagerduty_events(pd).items()} == {
        A: [("trigger", a[0]["event_id"]), ("trigger", a[1]["event_id"]), ("resolve", a[2]["event_id"])],
        B: [("trigger", b[0]["event_id"]), ("resolve", b[2]["event_id"])]}
    # Retry-After: 1 was waited for
    assert pd.requests[2][0] - pd.requests[1][0] >= 0.95
    # the webhook got the alert documents themselves, signed
    for _t, headers, body in hook.requests:
        expected = hmac.new(SECRETS["HOOK_SECRET"].encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Driftline-Signature"] == f"sha256={expected}"
        assert headers["X-Driftline-Event-Id"] == json.loads(body)["event_id"]
        assert abs(int(headers["X-Driftline-Timestamp"]) - time.time()) < 120
    by_fingerprint: dict[str, list[str]] = {}
    for _t, _h, body in hook.requests:
        by_fingerprint.setdefault(json.loads(body)["fingerprint"], []).append(json.loads(body)["event_id"])
    assert {k: deduped(v) for k, v in by_fingerprint.items()} == {A: [d["event_id"] for d in a],
                                                                  B: [b[0]["event_id"], b[2]["event_id"]]}
    assert metrics.MALFORMED._value.get() == malformed_before + 1
    # every alert, the skipped ones too, is committed
    group = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.consumer_group}-dispatch"})
    try:
        parts = [TopicPartition(settings.topic(topics.ALERTS), p) for p in range(settings.topic_partitions)]
        committed = {tp.partition: tp.offset for tp in group.committed(parts, timeout=10)}
        ends = {p.partition: group.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        assert {p: max(o, 0) for p, o in committed.items()} == ends
    finally:
        group.close()


class Subprocess:
    """``driftline alerts dispatch`` as its own process (through the sub-app, as ``driftline alerts`` runs it)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from driftline.streams.actions.commands import alerts_app; alerts_app()",
                 "dispatch"], env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def alive(self) -> bool:
        return self.proc.poll() is None


def test_a_dispatcher_killed_mid_delivery_loses_nothing_and_repeats_only_same_dedup_keys(env_for, serve, tmp_path):
    healthy = threading.Event()
    pd = serve(lambda _n, _b: (202, {}, b"{}") if healthy.is_set() else (500, {}, b"down"))
    env = env_with_routes(env_for, [{"name": "pd", "kind": "pagerduty", "url": pd.url, "routing_key_env": "PD_KEY",
                                     **FAST, "retry_max_delay_seconds": 0.3}])
    settings = settings_of(env)
    topics.ensure_topics(settings)
    a, b = incident(A), incident(B)
    publish(settings, [a[0], b[0], a[1], a[2], b[2]])
    first = Subprocess(env, tmp_path / "dispatch-1.log")
    deadline = time.monotonic() + 60
    while len(pd.requests) < 4 and time.monotonic() < deadline and first.alive():
        time.sleep(0.1)
    assert len(pd.requests) >= 4, (tmp_path / "dispatch-1.log").read_text()
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    healthy.set()
    second = Subprocess(env, tmp_path / "dispatch-2.log")
    try:
        found = outcomes(settings, 5, alive=second.alive)
    finally:
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(30) == 0, (tmp_path / "dispatch-2.log").read_text()
    assert sorted(o["event_id"] for o in found) == sorted(d["event_id"] for d in [*a, b[0], b[2]])
    assert all(o["outcome"] == "delivered" for o in found)
    assert {k: deduped(v) for k, v in pagerduty_events(pd).items()} == {
        A: [("trigger", a[0]["event_id"]), ("trigger", a[1]["event_id"]), ("resolve", a[2]["event_id"])],
        B: [("trigger", b[0]["event_id"]), ("resolve", b[2]["event_id"])]}


def test_a_silence_mutes_without_a_request_and_unsilence_unmutes(env_for, serve, monkeypatch):
    hook = serve(lambda _n, _b: (202, {}, b"ok"))
    env = env_with_routes(env_for, [{"name": "hook", "kind": "webhook", "url": hook.url,
                                     "secret_env": "HOOK_SECRET", **FAST}])
    for key, value in env.items():
        if key.startswith("DRIFTLINE_"):
            monkeypatch.setenv(key, value)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    open_one = AlertTransition(A, f"{A}-1", 0, "triggered", "fraud", "3", "drift", "critical", ("psi:amount",), (),
                               0, 60_000, 1_735_689_600_000, "ref", "cfg", True, "fraud/3 drifts")
    monkeypatch.setitem(sys.modules, "driftline.streams.actions.state_log",
                        types.SimpleNamespace(open_incidents=lambda _settings: [open_one]))
    cli = CliRunner()
    made = cli.invoke(alerts_app, ["silence", "--model", "fr*", "--for", "1h", "--reason", "deploy 42"])
    assert made.exit_code == 0, made.output
    silence_id = made.output.strip()
    listed = cli.invoke(alerts_app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert f"{silence_id}  model=fr* policy=*" in listed.output and "deploy 42" in listed.output
    assert f"{A}-1  fraud/3 drift critical (triggered #0" in listed.output
    halt, thread = run_in_thread(settings, env)
    try:
        time.sleep(1.5)  # the dispatcher's follower reads the silence
        a = incident(A)
        publish(settings, [a[0], a[2]])
        found = outcomes(settings, 2)
        assert sorted((o["event_id"], o["outcome"], o["silence_id"], o["attempts"]) for o in found) == [
            (a[0]["event_id"], "silenced", silence_id, 0), (a[2]["event_id"], "delivered", None, 1)]
        # the resolve went through: it never pages, and closes what was opened before the silence
        assert [json.loads(body)["event_id"] for _t, _h, body in hook.requests] == [a[2]["event_id"]]
        gone = cli.invoke(alerts_app, ["unsilence", silence_id])
        assert gone.exit_code == 0 and f"silence {silence_id} removed" in gone.output
        again = cli.invoke(alerts_app, ["unsilence", silence_id])
        assert isinstance(again.exception, UnknownSilence)
        assert "policy=*" not in cli.invoke(alerts_app, ["list"]).output
        time.sleep(1.5)
        c = alert_doc("triggered", 0, C)
        publish(settings, [c])
        found = outcomes(settings, 3)
        assert [o["outcome"] for o in found if o["event_id"] == c["event_id"]] == ["delivered"]
        assert len(hook.requests) == 2
    finally:
        halt.set()
        thread.join(30)
