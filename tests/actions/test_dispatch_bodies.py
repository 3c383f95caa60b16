"""What the dispatcher sends: PagerDuty Events v2 bodies valid against PagerDuty's published OpenAPI schema,
webhook signatures a receiver can verify independently, and delivery outcomes valid against alert-delivery.v1."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import SecretStr
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from driftline import schemas
from driftline.errors import InvalidRecord
from driftline.streams.actions.dispatch import pagerduty, webhook
from driftline.streams.actions.dispatch.alert import decode
from driftline.streams.actions.dispatch.dispatcher import outcome_record
from driftline.streams.actions.dispatch.routes import Route, RouteSpec
from driftline.streams.actions.dispatch.sender import Result
from driftline.streams.actions.silences import new_silence

SPEC = Path(__file__).resolve().parents[1] / "data" / "pagerduty-events-v2.openapi.json"
ENQUEUE = "urn:pagerduty-events-v2#/paths/~1enqueue/post/requestBody/content/application~1json/schema"
FINGERPRINT = "0123456789abcdef0123456789abcdef"


def alert_doc(transition: str = "triggered", sequence: int = 0, fingerprint: str = FINGERPRINT,
              **overrides: Any) -> dict[str, Any]:
    """A valid alert.v1 document (checked against the schema by the tests that use it)."""
    incident = f"{fingerprint}-1735689600000"
    doc: dict[str, Any] = {
        "schema_version": 1, "event_id": f"{incident}/{sequence}", "fingerprint": fingerprint,
        "incident_id": incident, "sequence": sequence, "transition": transition, "model_id": "fraud",
        "model_version": "3", "policy": "drift", "severity": "critical",
        "summary": f"fraud/3: drift {transition} (psi:amount 0.41 > 0.2)", "members": ["psi:amount"],
        "notify": True, "time": "2025-01-01T00:05:00Z", "emitted_at": "2025-01-01T00:05:03.120Z",
        "evidence": {
            "breaches": [{"metric": "psi", "feature": "amount", "slice": "", "value": 0.41, "threshold": 0.2,
                          "p_value": None, "n": 1200, "window_start": "2025-01-01T00:04:00Z",
                          "window_end": "2025-01-01T00:05:00Z", "source": "predictions", "revision": 0}],
            "first_window": "2025-01-01T00:03:00Z", "last_window": "2025-01-01T00:04:00Z",
            "reference_id": "ref-1", "config_version": "cfg-1",
            "sql": "SELECT * FROM driftline.windows WHERE model_id = 'fraud'"},
        "actions": [{"kind": "retrain", "event_id": f"retrain-{fingerprint}-1735689840000"}],
        "links": [{"href": "https://runbooks.example/fraud", "text": "runbook"}],
    }
    doc.update(overrides)
    return doc


def encoded(doc: dict[str, Any]) -> bytes:
    jsonschema.Draft202012Validator(schemas.load("alert.v1"),
                                    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(doc)
    return json.dumps(doc).encode()


def pagerduty_validator() -> jsonschema.Draft202012Validator:
    """The enqueue request schema with its ``#/components/...`` references resolved inside the OpenAPI document."""
    spec = json.loads(SPEC.read_text())
    registry: Registry = Registry().with_resource("urn:pagerduty-events-v2",
                                                  Resource.from_contents(spec, default_specification=DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": ENQUEUE}, registry=registry,
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


VALIDATOR = pagerduty_validator()


@pytest.mark.parametrize(("transition", "action"), [("triggered", "trigger"), ("updated", "trigger"),
                                                     ("resolved", "resolve")])
def test_pagerduty_bodies_validate_against_the_events_v2_schema(transition: str, action: str):
    alert = decode(encoded(alert_doc(transition, sequence={"triggered": 0, "updated": 1, "resolved": 2}[transition])))
    body = pagerduty.event_body(alert, "R0UTINGKEY", dashboard_url="https://driftline.example/")
    VALIDATOR.validate(body)
    assert body["routing_key"] == "R0UTINGKEY" and body["event_action"] == action
    assert body["dedup_key"] == FINGERPRINT and len(body["dedup_key"]) <= 255
    payload = body["payload"]
    assert payload["severity"] == "critical" and payload["source"] == "driftline/fraud"
    assert (payload["component"], payload["group"], payload["class"]) == ("fraud", "3", "drift")
    assert payload["timestamp"] == "2025-01-01T00:05:00+00:00"
    details = payload["custom_details"]
    assert details["transition"] == transition and details["incident_id"] == alert.incident_id
    assert details["breaches"][0]["metric"] == "psi" and details["sql"].startswith("SELECT")
    assert details["members"] == ["psi:amount"] and details["actions"][0]["kind"] == "retrain"
    assert body["links"] == [{"href": "https://runbooks.example/fraud", "text": "runbook"}]
    if action == "trigger":
        assert (body["client"], body["client_url"]) == ("driftline", "https://driftline.example/")
    else:
        assert "client" not in body and "client_url" not in body


def test_an_update_keeps_the_trigger_s_dedup_key_and_no_dashboard_means_no_client():
    first = pagerduty.event_body(decode(encoded(alert_doc("triggered"))), "k")
    update = pagerduty.event_body(decode(encoded(alert_doc("updated", 1, summary="worse"))), "k")
    assert first["dedup_key"] == update["dedup_key"] and update["payload"]["summary"] == "worse"
    assert "client" not in first and "client_url" not in first


def test_a_long_summary_is_cut_to_1024_and_many_breaches_are_counted():
    doc = alert_doc()
    doc["evidence"]["breaches"] = doc["evidence"]["breaches"] * 80
    body = pagerduty.event_body(decode(json.dumps({**doc, "summary": "x" * 3000}).encode()), "k")
    VALIDATOR.validate(body)
    assert len(body["payload"]["summary"]) == 1024 and body["payload"]["summary"].endswith("…")
    details = body["payload"]["custom_details"]
    assert len(details["breaches"]) == 50 and details["breaches_omitted"] == 30


@pytest.mark.parametrize(("path", "value"), [(("payload", "severity"), "loud"), (("event_action",), "page"),
                                             (("routing_key",), None), (("payload", "summary"), None),
                                             (("payload", "timestamp"), "yesterday")])
def test_the_schema_check_rejects_a_broken_body(path: tuple[str, ...], value: Any):
    body = copy.deepcopy(pagerduty.event_body(decode(encoded(alert_doc())), "k"))
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(body)


def test_the_webhook_signature_verifies_with_an_independent_hmac():
    body = encoded(alert_doc())
    alert = decode(body)
    headers = webhook.headers(alert, body, "wh-secret", 1735689903.7)
    expected = hmac.new(b"wh-secret", body, hashlib.sha256).hexdigest()
    assert headers["X-Driftline-Signature"] == f"sha256={expected}"
    assert headers["X-Driftline-Event-Id"] == alert.event_id
    assert headers["X-Driftline-Timestamp"] == "1735689903"
    assert headers["Content-Type"] == "application/json"
    tampered = body.replace(b"critical", b"info")
    assert webhook.signature("wh-secret", tampered) != headers["X-Driftline-Signature"]
    assert webhook.signature("other", body) != headers["X-Driftline-Signature"]


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "empty"), (b"{not json", "not JSON"), (b'{"schema_version": 1}', "missing required field"),
    (json.dumps(alert_doc(fingerprint="XYZ")).encode(), "fingerprint"),
    (json.dumps(alert_doc(time="2025-01-01T00:05:00")).encode(), "time"),
    (json.dumps(alert_doc(severity="loud")).encode(), "severity"),
    (json.dumps(alert_doc(transition="reopened")).encode(), "transition"),
])
def test_a_record_that_is_not_an_alert_is_an_invalid_record_with_the_reason(value: bytes, reason: str):
    with pytest.raises(InvalidRecord, match=reason):
        decode(value)


def test_a_field_added_by_a_later_revision_is_tolerated():
    assert decode(json.dumps({**alert_doc(), "runbook": "x"}).encode()).fingerprint == FINGERPRINT


def test_outcomes_validate_against_alert_delivery_v1():
    validator = jsonschema.Draft202012Validator(schemas.load("alert-delivery.v1"),
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    alert = decode(encoded(alert_doc()))
    route = Route(RouteSpec(name="pd", kind="pagerduty", routing_key_env="PD"), SecretStr("k"))
    silence = new_silence("fraud", None, timedelta(hours=1), "deploy")
    delivered = outcome_record(alert, route, Result("delivered", 202, 3, '{"status":"success"}'), None)
    failed = outcome_record(alert, route, Result("failed", None, 7, "ConnectError: refused"), None)
    silenced = outcome_record(alert, route, None, silence)
    for doc in (delivered, failed, silenced):
        validator.validate(doc)
    assert (silenced["outcome"], silenced["attempts"], silenced["silence_id"]) == ("silenced", 0, silence.id)
    assert delivered["route"] == "pd" and "k" not in json.dumps(delivered["route"])
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**delivered, "outcome": "sent"})
