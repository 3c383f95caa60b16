"""The policy engine on the real broker: scripted findings in, alerts and CloudEvents out, across a SIGKILL.

A worker runs the actions stage alone (``--stage actions``); the test plays the merge stage's part by publishing
findings records, so every window, revision and breach is chosen here and the expected decisions are exact.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from driftline import schemas
from driftline.streams import store
from driftline.streams.actions.findings import FindingRow, WindowFindings
from driftline.streams.kafka import topics
from driftline.streams.kafka.boundary import KAFKA_LOG
from tests.conftest import ROOT, settings_of
from tests.integration.synthetic import outside_producer
from tests.integration.test_detection import produce_windows, set_stored_reference

pytestmark = pytest.mark.integration
T0 = 1_767_225_600_000
MINUTE = 60_000
DATA = ROOT / "tests" / "data"
CONFIG = """
defaults:
  alerting:
    rollback: {min_healthy_windows: 3, min_events: 100}
    policies:
      - name: drift
        metrics: [ks, chi2]
        min_consecutive_breaches: 2
        resolve_after_windows: 2
        cooldown_seconds: 600
        severity: warning
        actions: [alert, retrain, rollback]
      - name: performance
        metrics: [accuracy]
        severity: critical
        actions: [alert]
"""


def findings(model: str, version: str, w: int, *rows: FindingRow, source: str = "predictions",
             revision: int = 0, events: int = 500) -> WindowFindings:
    return WindowFindings(model, version, T0 + w * MINUTE, T0 + (w + 1) * MINUTE, source, revision,  # type: ignore[arg-type]
                          "auto-ref", "cfg", events, rows)


def ks(breached: bool, feature: str = "age") -> FindingRow:
    return FindingRow("ks", feature, "", 0.3 if breached else 0.02, 500, breached, 0.01, 1e-9 if breached else 0.4)


def chi2(breached: bool) -> FindingRow:
    return FindingRow("chi2", "country", "", 40.0 if breached else 1.0, 500, breached, 0.01,
                      1e-7 if breached else 0.6)


def accuracy(breached: bool, n: int) -> FindingRow:
    return FindingRow("accuracy", "", "", 0.7 if breached else 0.93, n, breached, 0.9, 1e-6 if breached else 0.5)


class Topic:
    """Reads one topic from the beginning, remembering what it has read."""

    def __init__(self, bootstrap: str, name: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{name}",
                                  "enable.auto.commit": False, "logger": KAFKA_LOG})
        meta = self.consumer.list_topics(name, timeout=30).topics[name]
        self.consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in meta.partitions])
        self.records: list[tuple[bytes, dict, dict]] = []

    def wait(self, count: int, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.records) < count and time.monotonic() < deadline:
            for msg in self.consumer.consume(100, timeout=0.5):
                if msg.error() is None:
                    self.records.append((msg.key(), json.loads(msg.value()), dict(msg.headers() or [])))
        return [value for _, value, _ in self.records]

    def records_within(self, seconds: float) -> list[tuple[bytes, bytes, dict]]:
        """Raw records (key, value, headers) that arrive within ``seconds``; values need not be JSON."""
        raw: list[tuple[bytes, bytes, dict]] = []
        deadline = time.monotonic() + seconds
        while not raw and time.monotonic() < deadline:
            raw += [(m.key(), m.value(), dict(m.headers() or [])) for m in self.consumer.consume(100, timeout=0.5)
                    if m.error() is None]
        return raw

    def settle(self, seconds: float = 4.0) -> list[dict]:
        """Everything read, after waiting ``seconds`` more (to see that nothing else is published)."""
        return self.wait(10_000, timeout=seconds)


def publish(bootstrap: str, topic: str, *items: WindowFindings) -> None:
    producer = outside_producer(bootstrap)
    for item in items:
        producer.produce(topic, key=item.model_id.encode(), value=item.encode())
    assert producer.flush(30) == 0


def test_policies_act_once_and_survive_a_sigkill_mid_incident(env_for, worker_for, tmp_path: Path) -> None:
    config = tmp_path / "monitoring.yaml"
    config.write_text(CONFIG)
    env = env_for(monitoring_config=config)
    settings = settings_of(env)
    bootstrap, source = settings.kafka_bootstrap, settings.topic(topics.FINDINGS)
    worker = worker_for(env).start("--stage", "actions")
    # a malformed record first: dead-lettered with its reason, the engine goes on
    garbage = outside_producer(bootstrap)
    garbage.produce(source, key=b"fraud", value=b'{"model_id": "fraud", "rows": "not a list"}')
    assert garbage.flush(30) == 0
    # v1 serves three healthy windows: the only version a rollback may go to
    publish(bootstrap, source, *(findings("fraud", "1", w, ks(False), chi2(False)) for w in range(3)))
    # v2: healthy, then ks:age breaches two windows in a row -> triggered, retrain, rollback to v1
    publish(bootstrap, source, findings("fraud", "2", 4, ks(False), chi2(False)),
            findings("fraud", "2", 5, ks(True), chi2(False)), findings("fraud", "2", 6, ks(True), chi2(False)),
            # a model with one version: its rollback is refused, never sent to a version nobody saw
            findings("solo", "1", 5, ks(True)), findings("solo", "1", 6, ks(True)))
    worker.wait_metric("driftline_alert_transitions_total", 2, timeout=120)
    alerts = Topic(bootstrap, settings.topic(topics.ALERTS))
    first = alerts.wait(2)
    assert sorted((a["model_id"], a["transition"], a["sequence"]) for a in first) == [
        ("fraud", "triggered", 0), ("solo", "triggered", 0)]
    fraud = next(a for a in first if a["model_id"] == "fraud")
    assert fraud["members"] == ["ks:age"] and fraud["notify"] is True
    assert [(a["kind"], a.get("to_version")) for a in fraud["actions"]] == [("retrain", None), ("rollback", "1")]
    solo = next(a for a in first if a["model_id"] == "solo")
    assert [a["kind"] for a in solo["actions"]] == ["retrain", "rollback_refused"]

    worker.kill()  # mid-incident
    worker = worker_for(env, "worker-2").start("--stage", "actions")
    # replayed and new findings: the open incident is updated (chi2 joins), never re-triggered
    publish(bootstrap, source, findings("fraud", "2", 6, ks(True), chi2(False)),  # a duplicate revision
            findings("fraud", "2", 7, ks(True), chi2(True)),
            # labels of window 6 land: too few to judge, then enough to breach (acted on once), then a replay
            findings("fraud", "2", 6, accuracy(False, 40), source="labels", revision=40),
            findings("fraud", "2", 6, accuracy(True, 400), source="labels", revision=400),
            findings("fraud", "2", 6, accuracy(True, 400), source="labels", revision=400),
            findings("fraud", "2", 6, accuracy(False, 300), source="labels", revision=300),
            # two healthy windows resolve the drift incident
            findings("fraud", "2", 8, ks(False), chi2(False)), findings("fraud", "2", 9, ks(False), chi2(False)),
            # a new breach streak inside the cooldown (600 s of event time after window 6): alert without a page,
            # no second retrain or rollback
            findings("fraud", "2", 10, ks(True), chi2(False)), findings("fraud", "2", 11, ks(True), chi2(False)))
    later = alerts.wait(2 + 4)
    everything = alerts.settle()
    assert len(everything) == 6, [(a["model_id"], a["policy"], a["transition"]) for a in everything]
    fraud_drift = [a for a in everything if a["model_id"] == "fraud" and a["policy"] == "drift"]
    assert [(a["transition"], a["sequence"], a["members"], a["notify"]) for a in fraud_drift] == [
        ("triggered", 0, ["ks:age"], True),
        ("updated", 1, ["chi2:country", "ks:age"], True),
        ("resolved", 2, ["chi2:country", "ks:age"], True),
        ("triggered", 0, ["ks:age"], False)]
    assert fraud_drift[1]["incident_id"] == fraud_drift[0]["incident_id"] != fraud_drift[3]["incident_id"]
    assert fraud_drift[3]["actions"] == []
    performance = [a for a in later if a["policy"] == "performance"]
    assert [(a["transition"], a["severity"]) for a in performance] == [("triggered", "critical")]
    assert performance[0]["evidence"]["breaches"][0]["revision"] == 400

    validator = jsonschema.Draft202012Validator(schemas.load("alert.v1"),
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for alert in everything:
        validator.validate(alert)
    assert {key for key, _, _ in alerts.records} == {a["fingerprint"].encode() for a in everything}

    # a plain confluent-kafka consumer (the README's example, no driftline import) reads the requests
    example = subprocess.run([sys.executable, str(ROOT / "examples" / "retrain_consumer.py"), bootstrap,
                              settings.topic(topics.RETRAIN), settings.topic(topics.ROLLBACK)],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert example.returncode == 0, example.stderr
    requests = [json.loads(line) for line in example.stdout.splitlines()]
    assert sorted((r["type"], r["subject"]) for r in requests) == [
        ("io.driftline.retrain.requested", "fraud"), ("io.driftline.retrain.requested", "solo"),
        ("io.driftline.rollback.requested", "fraud")]
    cloudevents = jsonschema.Draft7Validator(json.loads((DATA / "cloudevents-1.0.schema.json").read_text()))
    for r in requests:
        cloudevents.validate(r)
        jsonschema.Draft202012Validator(schemas.load(r["type"].split(".")[2] + ".v1")).validate(r)
    rollback = next(r for r in requests if r["type"].endswith("rollback.requested"))
    assert (rollback["data"]["from_version"], rollback["data"]["to_version"]) == ("2", "1")
    assert rollback["id"] == fraud["actions"][1]["event_id"]

    [dead] = Topic(bootstrap, settings.topic(topics.DLQ)).records_within(10)
    assert dead[2]["driftline.reason"].startswith(b"unreadable findings record"), dead
    assert worker.terminate() == 0
    # `driftline alerts list` rebuilds the open incidents from the engine's changelog, as the worker does
    listed = subprocess.run([sys.executable, "-m", "driftline.streams", "alerts", "list"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "open incidents (3):" in listed.stdout, listed.stdout
    assert all(f" {entry} " in listed.stdout for entry in ("fraud/2 performance critical", "fraud/2 drift warning",
                                                           "solo/1 drift warning")), listed.stdout
    with store.opened(settings.clickhouse_url) as client:
        _, rows = store.query(client, "SELECT transition, count() FROM driftline.alerts WHERE kind = 'transition' "
                                      "GROUP BY transition ORDER BY transition")
    assert rows == [("resolved", 1), ("triggered", 4), ("updated", 1)]


def test_out_of_the_box_sustained_drift_raises_a_warning_and_a_retrain_request(env_for, worker_for,
                                                                              tmp_path: Path) -> None:
    """The whole loop with no configuration: predictions in, windows written, built-in policies act in seconds:
    the sequential policy on the first alarming tick, the drift policy after three breached windows."""
    env = env_for(window_seconds=60, allowed_lateness_seconds=5)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    set_stored_reference(env, tmp_path)
    produce_windows(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), 6, 3000, shifted_from=3)
    worker = worker_for(env).start()
    alerts = Topic(settings.kafka_bootstrap, settings.topic(topics.ALERTS))
    retrain = Topic(settings.kafka_bootstrap, settings.topic(topics.RETRAIN))
    deadline = time.monotonic() + 180
    while not any(a["policy"] == "drift" for a in alerts.wait(len(alerts.records) + 1, timeout=5)):
        assert time.monotonic() < deadline, alerts.records
    first, alert = alerts.records[0][1], next(a for a in alerts.wait(0) if a["policy"] == "drift")
    # the sequential alarm came first, dated within the first shifted window (its tick's end), with a request
    assert (first["policy"], first["severity"], first["transition"]) == ("sequential", "warning", "triggered")
    assert "2026-01-01T00:03" < first["time"] < "2026-01-01T00:04" and "cusum:tenure" in first["members"]
    assert "driftline.alarms" in first["evidence"]["sql"]
    assert (alert["policy"], alert["severity"], alert["transition"]) == ("drift", "warning", "triggered")
    assert "ks:tenure" in alert["members"] and "prediction_drift:score" in alert["members"]
    assert {b["window_start"][:16] for b in alert["evidence"]["breaches"]} == {
        "2026-01-01T00:03", "2026-01-01T00:04", "2026-01-01T00:05"}
    requests = {r["data"]["policy"]: r for r in retrain.wait(2, timeout=30)}
    assert sorted(requests) == ["drift", "sequential"]
    assert requests["drift"]["data"]["traffic"] == {"from": "2026-01-01T00:03:00.000Z",
                                                    "to": "2026-01-01T00:06:00.000Z"}
    assert alerts.records[0][2] == {} and retrain.records[0][2] == {"content-type": b"application/cloudevents+json; "
                                                                                  b"charset=UTF-8"}
    worker.wait_metric("driftline_windows_written_total", 6)
    seen = alerts.settle(3)
    # no other alert: no rollback without a policy asking, no performance alert; the sequential incident
    # only grows its members while the shift lasts
    assert {a["policy"] for a in seen} == {"sequential", "drift"}
    assert [a["transition"] for a in seen if a["policy"] == "drift"] == ["triggered"]
    assert {a["transition"] for a in seen if a["policy"] == "sequential"} <= {"triggered", "updated"}
    assert worker.terminate() == 0
    with store.opened(settings.clickhouse_url) as client:
        _, written = store.query(client, "SELECT max(written_at) FROM driftline.windows WHERE metric = 'ks' AND "
                                         "breached AND window_start = toDateTime64('2026-01-01 00:05:00', 3, 'UTC')")
        _, evidence = store.query(client, alert["evidence"]["sql"])
        _, recorded = store.query(client, "SELECT event_id, evidence_sql FROM driftline.alerts")
        _, alarms = store.query(client, first["evidence"]["sql"])
    decided_after = (datetime.fromisoformat(alert["emitted_at"].replace("Z", "+00:00")).timestamp()
                     - written[0][0].replace(tzinfo=UTC).timestamp())
    assert decided_after < 5, f"policies evaluated {decided_after:.1f} s after the window's rows were written"
    assert {(r[1], r[2]) for r in evidence if r[8]} >= {("ks", "tenure"), ("prediction_drift", "score")}
    assert ("cusum", "tenure") in {(r[2], r[3]) for r in alarms}
    assert sorted(recorded) == sorted((a["event_id"], a["evidence"]["sql"]) for a in seen)
