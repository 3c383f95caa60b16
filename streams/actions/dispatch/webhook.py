"""The generic webhook request: the alert.v1 document itself, signed with the route's HMAC secret.

The body is the alert record's value exactly as the policy engine published it, so its bytes are what is
signed. Headers:

* ``X-Driftline-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes, keyed with the route's secret
  (the value of its ``secret_env`` variable, UTF-8).
* ``X-Driftline-Event-Id``: the transition's ``event_id`` (``<incident_id>/<sequence>``); a re-sent delivery
  after a crash or a retry carries the same id, so a receiver drops what it has seen.
* ``X-Driftline-Timestamp``: when this attempt was sent, Unix seconds.

A receiver verifies a request before it parses it: compute the HMAC over the raw body it read (not over
re-serialised JSON) and compare in constant time, e.g. in Python::

    expected = "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers["X-Driftline-Signature"]):
        reject(401)

To refuse replays, it also rejects an ``emitted_at`` (in the body, so covered by the signature) older than it
accepts, and keeps the event ids it processed for that long.
"""

from __future__ import annotations

import hashlib
import hmac

from driftline.streams.actions.dispatch.alert import Alert

SIGNATURE_HEADER = "X-Driftline-Signature"
EVENT_ID_HEADER = "X-Driftline-Event-Id"
TIMESTAMP_HEADER = "X-Driftline-Timestamp"


def signature(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``.

    >>> signature("s3cret", b'{"a":1}')
    'sha256=5910e62016ef5034272c926c27071992a465c2335cecf41851bda071577f4f6d'
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers(alert: Alert, body: bytes, secret: str, sent_at: float) -> dict[str, str]:
    """The headers of one attempt to deliver ``body`` (the record value of ``alert``)."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, body),
        EVENT_ID_HEADER: alert.event_id,
        TIMESTAMP_HEADER: str(int(sent_at)),
    }
