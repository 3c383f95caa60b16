"""The PagerDuty Events API v2 request for an alert transition (``POST /v2/enqueue``).

A ``triggered`` transition opens an incident and an ``updated`` one is sent as another ``trigger`` with the
same ``dedup_key`` (PagerDuty folds it into the open alert, refreshing its summary and details); ``resolved``
closes it. The ``dedup_key`` is the alert's fingerprint, so a re-sent event after a crash changes nothing.
"""

from __future__ import annotations

from typing import Any

from driftline.streams.actions.dispatch.alert import Alert

SUMMARY_LIMIT = 1024  # PagerDuty cuts longer summaries itself; cutting here keeps the end marker visible
DEDUP_KEY_LIMIT = 255
BREACHES_LIMIT = 50  # the whole event must stay under PagerDuty's 512 KB; the SQL shows every breach anyway
CLIENT = "driftline"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def custom_details(alert: Alert) -> dict[str, Any]:
    """The evidence shown on the incident: transition, members, breaches, windows and the SQL behind them."""
    breaches = alert.evidence.breaches
    details: dict[str, Any] = {
        "transition": alert.transition,
        "incident_id": alert.incident_id,
        "event_id": alert.event_id,
        "sequence": alert.sequence,
        "model_id": alert.model_id,
        "model_version": alert.model_version,
        "policy": alert.policy,
        "members": alert.members,
        "breaches": breaches[:BREACHES_LIMIT],
        "first_window": alert.evidence.first_window,
        "last_window": alert.evidence.last_window,
        "reference_id": alert.evidence.reference_id,
        "config_version": alert.evidence.config_version,
        "sql": alert.evidence.sql,
    }
    if len(breaches) > BREACHES_LIMIT:
        details["breaches_omitted"] = len(breaches) - BREACHES_LIMIT
    if alert.actions:
        details["actions"] = alert.actions
    return details


def event_body(alert: Alert, routing_key: str, dashboard_url: str = "") -> dict[str, Any]:
    """The Events v2 body for ``alert``, sent with ``routing_key``; ``dashboard_url`` set: linked as the client.

    >>> from driftline.streams.actions.dispatch.alert import decode
    >>> import json
    >>> doc = {"schema_version": 1, "event_id": "i/1", "fingerprint": "0" * 32, "incident_id": "i", "sequence": 1,
    ...        "transition": "resolved", "model_id": "fraud", "model_version": "3", "policy": "drift",
    ...        "severity": "error", "summary": "drift resolved", "members": [], "notify": True,
    ...        "time": "2025-01-01T00:05:00Z", "emitted_at": "2025-01-01T00:05:02Z", "actions": [],
    ...        "evidence": {"breaches": [], "first_window": "2025-01-01T00:00:00Z", "sql": "SELECT 1",
    ...                     "last_window": "2025-01-01T00:04:00Z", "reference_id": "r", "config_version": "c"}}
    >>> body = event_body(decode(json.dumps(doc).encode()), "KEY")
    >>> body["event_action"], body["dedup_key"], body["payload"]["source"], body["payload"]["timestamp"]
    ('resolve', '00000000000000000000000000000000', 'driftline/fraud', '2025-01-01T00:05:00+00:00')
    """
    payload: dict[str, Any] = {
        "summary": _cut(alert.summary, SUMMARY_LIMIT),
        "severity": alert.severity,
        "source": f"driftline/{alert.model_id}",
        "timestamp": alert.time.isoformat(),
        "component": alert.model_id,
        "class": alert.policy,
        "custom_details": custom_details(alert),
    }
    if alert.model_version:
        payload["group"] = alert.model_version
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "resolve" if alert.transition == "resolved" else "trigger",
        "dedup_key": alert.fingerprint[:DEDUP_KEY_LIMIT],
        "payload": payload,
    }
    if alert.links:
        body["links"] = [{"href": link.href, **({"text": link.text} if link.text else {})} for link in alert.links]
    # client and client_url are read on trigger events only
    if dashboard_url and body["event_action"] == "trigger":
        body["client"] = CLIENT
        body["client_url"] = dashboard_url
    return body
