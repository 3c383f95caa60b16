"""What the policy engine decides: alert transitions and retrain/rollback requests, before any wire format.

The engine (`streams.actions.engine`) returns these; the actions stage turns them into the alert events
(``schemas/alert.v1.json``), the CloudEvents (``schemas/retrain.v1.json``, ``schemas/rollback.v1.json``) and the
``driftline.alerts`` rows. Every identifier here is derived from the decision's inputs (model, version,
policy, the window that decided it), never from a clock or a counter kept outside the engine's state, so the
same decision re-made after a crash carries the same id and receivers can drop the duplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from driftline.streams.actions.findings import Source

Transition = Literal["triggered", "updated", "resolved"]
ActionKind = Literal["retrain", "rollback"]
Severity = Literal["critical", "error", "warning", "info"]


def fingerprint(model_id: str, model_version: str, policy: str) -> str:
    """The stable identity of an incident stream: 32 hex digits of SHA-256 over (model, version, policy).

    It is the alerts topic's record key and PagerDuty's ``dedup_key``.

    >>> fingerprint("fraud", "3", "drift")
    'd53af926cc8481e9d135b8a86705469a'
    """
    return hashlib.sha256(f"{model_id}\x1f{model_version}\x1f{policy}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Breach:
    """One breaching (metric, feature, slice) of one window revision: the evidence of a decision."""

    metric: str
    feature: str
    slice: str
    value: float
    threshold: float | None
    p_value: float | None
    n: int
    window_start_ms: int
    window_end_ms: int
    source: Source  # ticks too: a sequential alarm's evidence
    revision: int

    @property
    def member(self) -> str:
        """The incident member this breach belongs to: ``metric``, ``metric:feature``, ``metric:feature[slice]``."""
        name = self.metric if not self.feature else f"{self.metric}:{self.feature}"
        return f"{name}[{self.slice}]" if self.slice else name


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """One step of an incident's life: opened (``triggered``), changed, or closed (``resolved``).

    ``sequence`` numbers the transitions of one incident from 0; ``event_id`` = ``incident_id/sequence``.
    ``notify`` is False when the policy's ``alert`` action is in its cooldown or not configured (the transition
    is still published and recorded). ``members`` is every metric/feature/slice breaching in the incident's
    latest breached window, sorted; ``breaches`` the evidence behind it (the windows of the streak that fired,
    or the latest breached window for an update); ``windows`` the first and last window start it covers.
    """

    fingerprint: str
    incident_id: str
    sequence: int
    transition: Transition
    model_id: str
    model_version: str
    policy: str
    severity: Severity
    members: tuple[str, ...]
    breaches: tuple[Breach, ...]
    first_window_ms: int
    last_window_ms: int
    decided_at_ms: int
    reference_id: str
    config_version: str
    notify: bool
    summary: str

    @property
    def event_id(self) -> str:
        return f"{self.incident_id}/{self.sequence}"


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """A retrain or rollback request made by a policy when it fired (and its action's cooldown had passed).

    ``event_id`` is deterministic: ``<kind>-<fingerprint>-<window_start_ms of the deciding window>``.
    ``traffic_from_ms``/``traffic_to_ms``: the event-time range of the affected traffic (the breaching windows),
    what a retraining job should pull. ``to_version`` is set for a rollback only.
    """

    kind: ActionKind
    event_id: str
    fingerprint: str
    incident_id: str
    model_id: str
    model_version: str
    policy: str
    severity: Severity
    breaches: tuple[Breach, ...]
    traffic_from_ms: int
    traffic_to_ms: int
    decided_at_ms: int
    reference_id: str
    config_version: str
    to_version: str | None = None


@dataclass(frozen=True, slots=True)
class RollbackRefused:
    """A policy asked for a rollback but no version qualifies as a target: an alert must say so."""

    fingerprint: str
    incident_id: str
    model_id: str
    model_version: str
    policy: str
    reason: str
    decided_at_ms: int


Decision = AlertTransition | ActionRequest | RollbackRefused
