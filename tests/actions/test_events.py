"""The wire formats of decisions: alert.v1, the retrain/rollback CloudEvents, the evidence SQL, findings records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from driftline import schemas
from driftline.detectors.findings import Finding
from driftline.streams import store
from driftline.streams.actions import events
from driftline.streams.actions.decisions import ActionRequest, AlertTransition, Breach, RollbackRefused, fingerprint
from driftline.streams.actions.findings import WindowFindings
from driftline.streams.pipeline.rows import to_rows

DATA = Path(__file__).resolve().parent.parent / "data"
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
# CloudEvents 1.0 JSON Schema (draft-07), copied from the team's shared specs (origin in tests/data/README.md)
CLOUDEVENTS = jsonschema.Draft7Validator(json.loads((DATA / "cloudevents-1.0.schema.json").read_text()),
                                         format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
T0 = 1_767_225_600_000
FP = fingerprint("fraud", "3", "drift")


def own(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schemas.load(name), format_checker=FORMATS)


def breach(w: int, metric: str = "ks", feature: str = "age", source: str = "predictions") -> Breach:
    return Breach(metric, feature, "", 0.31, 0.01, 2e-9, 400, T0 + w * 60_000, T0 + (w + 1) * 60_000, source, 0)


def transition(kind: str = "triggered", sequence: int = 0) -> AlertTransition:
    bs = (breach(3), breach(4), breach(5, "chi2", "country"))
    return AlertTransition(FP, f"{FP}-{T0 + 3 * 60_000}", sequence, kind, "fraud", "3", "drift",  # type: ignore[arg-type]
                           "warning", ("chi2:country", "ks:age"), bs, T0 + 3 * 60_000, T0 + 5 * 60_000,
                           T0 + 6 * 60_000, "auto-abc", "cfg123", True, "fraud v3: drift breached " + "x" * 2000)


def request(kind: str, to_version: str | None = None) -> ActionRequest:
    return ActionRequest(kind, f"{kind}-{FP}-{T0 + 5 * 60_000}", FP, f"{FP}-{T0 + 3 * 60_000}",  # type: ignore[arg-type]
                         "fraud", "3", "drift", "warning", (breach(3), breach(4)), T0 + 3 * 60_000, T0 + 6 * 60_000,
                         T0 + 6 * 60_000, "auto-abc", "cfg123", to_version)


@pytest.mark.parametrize("kind", ["triggered", "updated", "resolved"])
def test_alert_events_validate_against_their_schema(kind: str) -> None:
    refused = RollbackRefused(FP, "i", "fraud", "3", "drift", "no healthy version", T0)
    event = events.alert_event(transition(kind), [request("retrain"), refused], dashboard_url="http://dash:8000/")
    own("alert.v1").validate(event)
    assert len(event["summary"]) == 1024
    assert event["links"][0]["href"] == "http://dash:8000/ui/models/fraud"  # the dashboard's model page
    assert [a["kind"] for a in event["actions"]] == ["retrain", "rollback_refused"]
    assert event["evidence"]["breaches"][0]["window_start"] == "2026-01-01T00:03:00.000Z"
    broken = {**event, "fingerprint": "not-hex"}
    assert not own("alert.v1").is_valid(broken)


@pytest.mark.parametrize(("kind", "to_version"), [("retrain", None), ("rollback", "2")])
def test_action_requests_are_valid_cloudevents_and_match_driftlines_schema(kind: str, to_version: str | None) -> None:
    event = events.cloud_event(request(kind, to_version))
    CLOUDEVENTS.validate(event)
    own(f"{kind}.v1").validate(event)
    assert event["type"] == f"io.driftline.{kind}.requested" and event["subject"] == "fraud"
    assert event["data"]["traffic"] == {"from": "2026-01-01T00:03:00.000Z", "to": "2026-01-01T00:06:00.000Z"}
    assert events.cloud_event(request(kind, to_version)) == event, "the same decision is the same event"
    # the validators can fail: an event without its id breaks CloudEvents, a foreign type breaks ours
    assert not CLOUDEVENTS.is_valid({k: v for k, v in event.items() if k != "id"})
    assert not own(f"{kind}.v1").is_valid({**event, "type": "io.driftline.other"})
    if kind == "rollback":
        assert event["data"]["to_version"] == "2" and event["data"]["from_version"] == "3"
        no_target = {**event, "data": {k: v for k, v in event["data"].items() if k != "to_version"}}
        assert not own("rollback.v1").is_valid(no_target)


def test_the_evidence_sql_runs_and_shows_the_breaching_rows(tmp_path: Path) -> None:
    with store.opened(f"chdb://{tmp_path / 'ch'}") as client:
        for w in range(8):
            found = [Finding("count", 400.0, None, False),
                     Finding("ks", 0.31 if w >= 3 else 0.02, 0.01, w >= 3, feature="age", p_value=1e-9),
                     Finding("ks", 0.02, 0.01, False, feature="o'brien", p_value=0.5)]
            store.insert_windows(client, to_rows(("fraud", "3", T0 + w * 60_000), 60_000, found, 400), token=str(w))
        sql = events.alert_event(transition())["evidence"]["sql"]
        columns, rows = store.query(client, sql)
    assert columns[:3] == ["window_start", "metric", "feature"]
    ks_age = [r for r in rows if r[1] == "ks" and r[2] == "age"]
    assert [r[0].replace(tzinfo=UTC) for r in ks_age] == [datetime.fromtimestamp((T0 + w * 60_000) / 1000, UTC)
                                                          for w in (3, 4, 5)]
    assert all(r[8] == 1 for r in ks_age)
    assert {r[2] for r in rows} == {"age", "o'brien"}, "a quote in a name is escaped, not SQL"


def test_findings_carry_the_judged_rows_and_the_event_count() -> None:
    found = [Finding("count", 400.0, None, False), Finding("mean", 3.0, None, False, feature="age"),
             Finding("ks", np.float64(0.3), np.float64(0.01), True, feature="age", p_value=np.float64(1e-9)),
             Finding("accuracy", 0.9, None, False)]
    rows = to_rows(("fraud", "3", T0), 60_000, found, 400, "auto-x", "cfg", revision=0)
    findings = WindowFindings.from_rows(rows, "predictions")
    assert findings is not None
    assert (findings.window_start_ms, findings.window_end_ms, findings.events) == (T0, T0 + 60_000, 400)
    assert [(r.metric, r.breached) for r in findings.rows] == [("ks", True)]
    assert WindowFindings.decode(findings.encode()) == findings
    with pytest.raises(ValueError, match=r"findings record.source: must be one of"):
        WindowFindings.decode(findings.encode().replace(b'"predictions"', b'"other"'))


def test_the_readme_shows_the_consumer_example_the_tests_run() -> None:
    root = Path(__file__).resolve().parent.parent.parent
    example = (root / "examples" / "retrain_consumer.py").read_text()
    assert f"```python\n{example}```" in (root / "README.md").read_text()
    assert "driftline" not in example.replace("driftline.retrain", "").replace("driftline.rollback", "")


def test_a_sequential_alerts_evidence_sql_shows_its_alarms_before_the_window_closes(tmp_path: Path) -> None:
    """Decided on ticks alone, an alert points at driftline.alarms (the window's rows are not written yet)."""
    tick = T0 + 3 * 60_000 + 25_000
    ts = [datetime.fromtimestamp(ms / 1000, UTC) for ms in (tick, tick + 5_000, T0 + 3 * 60_000, tick - 10_000)]
    with store.opened(f"chdb://{tmp_path / 'ch'}") as client:
        store.insert_alarms(client, [["fraud", "3", ts[0], ts[1], ts[2], "cusum", "tenure", 9.1, 7.9, ts[3], "up",
                                      250, "auto-abc", "cfg123", "{}"]], token="a")
        ticks = (Breach("cusum", "tenure", "", 9.1, 7.9, None, 250, T0 + 3 * 60_000, tick + 5_000, "ticks", 1),)
        t = AlertTransition(fingerprint("fraud", "3", "sequential"), "i", 0, "triggered", "fraud", "3", "sequential",
                            "warning", ("cusum:tenure",), ticks, T0 + 3 * 60_000, T0 + 3 * 60_000, tick + 5_000,
                            "auto-abc", "cfg123", True, "fraud v3: sequential")
        sql = events.alert_event(t)["evidence"]["sql"]
        columns, rows = store.query(client, sql)
    assert "driftline.alarms" in sql and columns[:4] == ["tick_start", "tick_end", "method", "stream"]
    assert [(r[2], r[3], r[4]) for r in rows] == [("cusum", "tenure", 9.1)]
    mixed = events.alert_event(transition())["evidence"]["sql"]
    assert "driftline.windows" in mixed
