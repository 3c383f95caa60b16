"""The alert transition as the dispatcher reads it from ``<prefix>alerts`` (``schemas/alert.v1.json``).

Decoding checks what delivery relies on (types, enums, the fingerprint's form, an offset on every time) and
tolerates fields a later minor revision may add, so a dispatcher older than the policy engine keeps working.
The record's bytes are kept: a webhook receives exactly what was published.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from driftline.errors import InvalidRecord

Fingerprint = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


class Link(msgspec.Struct, frozen=True):
    """A link shown with the alert (PagerDuty's ``links`` item)."""

    href: str
    text: str | None = None


class Evidence(msgspec.Struct, frozen=True):
    """Why the alert fired: the breaches, the windows they cover, and the SQL that shows them."""

    breaches: list[dict[str, Any]]
    first_window: str
    last_window: str
    reference_id: str
    config_version: str
    sql: str


class Alert(msgspec.Struct, frozen=True):
    """One alert transition (alert.v1)."""

    schema_version: Literal[1]
    event_id: Annotated[str, msgspec.Meta(min_length=1)]
    fingerprint: Fingerprint
    incident_id: str
    sequence: Annotated[int, msgspec.Meta(ge=0)]
    transition: Literal["triggered", "updated", "resolved"]
    model_id: Annotated[str, msgspec.Meta(min_length=1)]
    model_version: str
    policy: Annotated[str, msgspec.Meta(min_length=1)]
    severity: Literal["critical", "error", "warning", "info"]
    summary: Annotated[str, msgspec.Meta(min_length=1)]
    members: list[str]
    notify: bool
    time: AwareTime
    emitted_at: AwareTime
    evidence: Evidence
    actions: list[dict[str, Any]]
    links: list[Link] | None = None


_DECODER = msgspec.json.Decoder(Alert)


def decode(value: bytes | None) -> Alert:
    """The alert in a record's value; raises `InvalidRecord` with the reason when it is not an alert.v1.

    >>> decode(b'{"schema_version": 2}')
    Traceback (most recent call last):
    ...
    driftline.errors.InvalidRecord: not an alert.v1 record: Invalid enum value 2 - at `$.schema_version`
    """
    if not value:
        raise InvalidRecord("empty alert record")
    try:
        return _DECODER.decode(value)
    except msgspec.ValidationError as exc:
        raise InvalidRecord(f"not an alert.v1 record: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidRecord(f"alert record is not JSON: {exc}") from None
