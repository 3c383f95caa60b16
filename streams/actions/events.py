"""The wire formats of decisions: alert.v1 documents, retrain/rollback CloudEvents, ``driftline.alerts`` rows.

One module turns a decision into every shape it takes, so the topic, the table and the webhook receivers all
see the same numbers. CloudEvents use the structured JSON mode of the Kafka protocol binding: the whole event
is the record value, the ``content-type`` header is ``application/cloudevents+json; charset=UTF-8`` and the
record key is the model id. Event ids and ``time`` come from the decision (the window that decided it), so
the same decision re-published after a crash is byte-for-byte the same event.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

from driftline.errors import InvalidRecord
from driftline.streams.actions.decisions import ActionRequest, AlertTransition, Breach, RollbackRefused
from driftline.streams.pipeline import internal
from driftline.streams.store import alarm_evidence_sql, evidence_sql

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"
CLOUDEVENT_SOURCE = "/driftline/policy-engine"
EVENT_TYPES = {"retrain": "io.driftline.retrain.requested", "rollback": "io.driftline.rollback.requested"}
DATA_SCHEMAS = {"retrain": "https://driftline.dev/schemas/retrain.v1.json",
                "rollback": "https://driftline.dev/schemas/rollback.v1.json"}


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-12-01T10:15:00.000Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def breach_json(b: Breach) -> dict[str, Any]:
    return {"metric": b.metric, "feature": b.feature, "slice": b.slice, "value": _number(b.value),
            "threshold": _number(b.threshold), "p_value": _number(b.p_value), "n": b.n,
            "window_start": iso(b.window_start_ms), "window_end": iso(b.window_end_ms), "source": b.source,
            "revision": b.revision}


def _sql(model_id: str, model_version: str, breaches: Sequence[Breach], from_ms: int, to_ms: int) -> str:
    """The rows behind the breaches: the sequential alarms when only ticks decided (their window may still be
    open, its rows not written), else the windows' rows."""
    if breaches and all(b.source == "ticks" for b in breaches):
        return alarm_evidence_sql(model_id, model_version, [b.metric for b in breaches], from_ms, to_ms)
    return evidence_sql(model_id, model_version, [b.metric for b in breaches] or ["count"], from_ms, to_ms)


def _window_range(t: AlertTransition) -> tuple[int, int]:
    ends = [b.window_end_ms for b in t.breaches]
    return t.first_window_ms, max([t.last_window_ms + 1, *ends])


def action_refs(decisions: Sequence[ActionRequest | RollbackRefused]) -> list[dict[str, Any]]:
    """The ``actions`` entries of an alert: the requests made with it, or why a rollback was refused."""
    refs: list[dict[str, Any]] = []
    for d in decisions:
        if isinstance(d, ActionRequest):
            ref = {"kind": d.kind, "event_id": d.event_id}
            if d.to_version is not None:
                ref["to_version"] = d.to_version
            refs.append(ref)
        else:
            refs.append({"kind": "rollback_refused", "event_id": f"rollback-{d.fingerprint}-{d.decided_at_ms}",
                         "reason": d.reason})
    return refs


def alert_event(t: AlertTransition, actions: Sequence[ActionRequest | RollbackRefused] = (),
                dashboard_url: str = "", emitted_at_ms: int | None = None) -> dict[str, Any]:
    """The alert.v1 document of one transition (``schemas/alert.v1.json``)."""
    from_ms, to_ms = _window_range(t)
    event: dict[str, Any] = {
        "schema_version": 1, "event_id": t.event_id, "fingerprint": t.fingerprint, "incident_id": t.incident_id,
        "sequence": t.sequence, "transition": t.transition, "model_id": t.model_id,
        "model_version": t.model_version, "policy": t.policy, "severity": t.severity,
        "summary": t.summary[:1024], "members": list(t.members), "notify": t.notify,
        "time": iso(t.decided_at_ms),
        "emitted_at": iso(emitted_at_ms if emitted_at_ms is not None else int(datetime.now(UTC).timestamp() * 1000)),
        "evidence": {"breaches": [breach_json(b) for b in t.breaches], "first_window": iso(t.first_window_ms),
                     "last_window": iso(t.last_window_ms), "reference_id": t.reference_id,
                     "config_version": t.config_version,
                     "sql": _sql(t.model_id, t.model_version, t.breaches, from_ms, to_ms)},
        "actions": action_refs(actions),
    }
    if dashboard_url:
        base = dashboard_url.rstrip("/")
        # the dashboard's model page: its alert timeline shows this incident with its evidence
        event["links"] = [{"href": f"{base}/ui/models/{quote(t.model_id, safe='')}",
                           "text": f"driftline: {t.model_id} v{t.model_version} {t.policy}"}]
    return event


def cloud_event(req: ActionRequest) -> dict[str, Any]:
    """The CloudEvents 1.0 (structured JSON) of a retrain or rollback request (``schemas/<kind>.v1.json``)."""
    data: dict[str, Any] = {
        "model_id": req.model_id, "model_version": req.model_version, "policy": req.policy,
        "severity": req.severity, "incident_id": req.incident_id, "fingerprint": req.fingerprint,
        "breaches": [breach_json(b) for b in req.breaches],
        "traffic": {"from": iso(req.traffic_from_ms), "to": iso(req.traffic_to_ms)},
        "reference_id": req.reference_id, "config_version": req.config_version,
        "evidence_sql": _sql(req.model_id, req.model_version, req.breaches, req.traffic_from_ms, req.traffic_to_ms),
    }
    if req.kind == "rollback":
        assert req.to_version is not None, "a rollback request always names its target"
        data["from_version"] = req.model_version
        data["to_version"] = req.to_version
    return {"specversion": "1.0", "id": req.event_id, "source": CLOUDEVENT_SOURCE, "type": EVENT_TYPES[req.kind],
            "subject": req.model_id, "time": iso(req.decided_at_ms), "datacontenttype": "application/json",
            "dataschema": DATA_SCHEMAS[req.kind], "data": data}


def encode(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def transition_row(event: dict[str, Any]) -> list[Any]:
    """The ``driftline.alerts`` row (``store.ALERT_COLUMNS``) of an alert.v1 document."""
    evidence = event["evidence"]
    return [event["event_id"], "transition", event["fingerprint"], event["incident_id"], event["sequence"],
            event["transition"], event["model_id"], event["model_version"], event["policy"], event["severity"],
            _at(event["time"]), event["summary"], event["members"], orjson.dumps(evidence).decode(),
            evidence["sql"], orjson.dumps(event["actions"]).decode(), int(event["notify"]), "", "", None, 0, ""]


# The alert-delivery.v1 fields the row is made of, with their types: a record read back from the
# alert-deliveries topic is checked against them before ClickHouse sees it (a wrong type there would fail
# the insert, and the stage would replay the record forever).
_DELIVERY_FIELDS = {"event_id": str, "fingerprint": str, "incident_id": str, "transition": str, "model_id": str,
                    "model_version": str, "policy": str, "severity": str, "time": str, "route": str, "outcome": str,
                    "status": int | None, "attempts": int, "response": str}


def delivery_row(delivery: object) -> list[Any]:
    """The ``driftline.alerts`` row of an alert-delivery.v1 document (the dispatcher's final outcome);
    `InvalidRecord` naming the field when ``delivery`` is not one."""
    if type(delivery) is not dict:
        raise InvalidRecord(f"alert delivery: must be a JSON object, got {type(delivery).__name__}")
    for name, hint in _DELIVERY_FIELDS.items():
        if name not in delivery:
            raise InvalidRecord(f"alert delivery: missing field {name}")
        internal.check(delivery[name], hint, f"alert delivery.{name}")
    return [delivery["event_id"], "delivery", delivery["fingerprint"], delivery["incident_id"], 0,
            delivery["transition"], delivery["model_id"], delivery["model_version"], delivery["policy"],
            delivery["severity"], _at(delivery["time"]), "", [], "{}", "", "[]", 1, delivery["route"],
            delivery["outcome"], delivery["status"], delivery["attempts"], delivery["response"]]
