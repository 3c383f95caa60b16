"""What the policy engine remembers of one model version (its JSON form on the changelog) and incident texts.

Owns what `streams.actions.engine` needs to carry on exactly after a restart: the latest revision of each
source of the version's last `WINDOW_MEMORY` windows (their breached rows, event counts, and which policies
judged them), and per policy the open incident, its sequence, members and latest transition, the newest
window an incident covered, and each action's cooldown clock. One record per (model, version) keeps a
window's rows in one place however many policies read them. Also owns the ``summary`` text of transitions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from driftline.streams.actions.decisions import AlertTransition, Breach
from driftline.streams.actions.findings import FindingRow, Source
from driftline.streams.actions.policies import matches
from driftline.streams.config.model_config.schema import STREAK_LIMIT, AlertPolicy
from driftline.streams.pipeline import internal

# Twice the longest streak a policy may ask for: room for unjudged windows inside a streak and for late label
# revisions of windows already behind the newest one.
WINDOW_MEMORY = 2 * STREAK_LIMIT

Verdict = Literal["breached", "healthy"] | None


@dataclass(slots=True)
class SourceRows:
    """The latest revision of one source of a window: its breached rows and which policies judged it."""

    revision: int
    events: int
    breached: tuple[FindingRow, ...]
    judged_by: tuple[str, ...]  # names of the policies with a matching judged row in this revision


@dataclass(slots=True)
class Window:
    start_ms: int
    end_ms: int
    sources: dict[Source, SourceRows] = field(default_factory=dict)

    def breaches(self, policy: AlertPolicy) -> list[Breach]:
        """The breached rows `policy` matches, over the latest revision of every source."""
        return [
            Breach(r.metric, r.feature, r.slice, r.value, r.threshold, r.p_value, r.n, self.start_ms, self.end_ms,
                   source, rows.revision)
            for source, rows in sorted(self.sources.items())
            for r in rows.breached
            if matches(policy, r)
        ]

    def verdict(self, policy: AlertPolicy) -> Verdict:
        """Breached (a matching row breached), healthy (matching rows were judged, none breached), else None."""
        if self.breaches(policy):
            return "breached"
        return "healthy" if any(policy.name in rows.judged_by for rows in self.sources.values()) else None

    def healthy(self, min_events: int) -> bool:
        """A window a rollback target may count: enough traffic and no breached judged row in any source."""
        events = max((rows.events for rows in self.sources.values()), default=0)
        return events >= min_events and not any(rows.breached for rows in self.sources.values())


@dataclass(slots=True)
class Incident:
    """The open incident of one (model, version, policy)."""

    first_window_ms: int
    members: tuple[str, ...]
    notified: bool  # whether its trigger notified: its updates may, its resolve does
    latest: AlertTransition  # its latest transition (its sequence, severity, evidence)
    rollback_to: str | None = None
    rollback_at_ms: int | None = None  # event time of the rollback decision


@dataclass(slots=True)
class PolicyState:
    covered_ms: int | None = None  # start of the newest breached window any incident of this stream covered
    clocks: dict[str, int] = field(default_factory=dict)  # action -> event time (ms) of its last use
    incident: Incident | None = None


@dataclass(slots=True)
class VersionState:
    horizon_ms: int | None = None  # start of the newest window evicted from memory: older findings are ignored
    windows: dict[int, Window] = field(default_factory=dict)
    policies: dict[str, PolicyState] = field(default_factory=dict)

    def ordered(self) -> list[Window]:
        return [self.windows[start] for start in sorted(self.windows)]

    def newest_ms(self) -> int:
        return max(self.windows, default=self.horizon_ms if self.horizon_ms is not None else -1)

    def open_incident(self) -> bool:
        return any(p.incident is not None for p in self.policies.values())

    def encode(self) -> bytes:
        return orjson.dumps({
            "horizon_ms": self.horizon_ms,
            "windows": [[w.start_ms, w.end_ms, {s: _source_json(r) for s, r in sorted(w.sources.items())}]
                        for w in self.ordered()],
            "policies": {name: _policy_json(p) for name, p in sorted(self.policies.items())},
        })

    @classmethod
    def decode(cls, raw: bytes | None) -> VersionState:
        """A state record as `encode` wrote it; `InvalidRecord` naming the field when it is not one."""
        return internal.conforms(internal.decoded(cls._parse, raw, "alert state"), "alert state")

    @classmethod
    def _parse(cls, raw: bytes) -> VersionState:
        data = orjson.loads(raw)
        windows = {
            int(start): Window(int(start), int(end), {s: _source_of(r) for s, r in sources.items()})
            for start, end, sources in data["windows"]
        }
        policies = {name: _policy_of(p) for name, p in data["policies"].items()}
        return cls(data["horizon_ms"], windows, policies)


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no NaN; None reads back as NaN


def _row_json(r: FindingRow) -> list[Any]:
    return [r.metric, r.feature, r.slice, _number(r.value), r.n, r.breached, r.threshold, r.p_value]


def _row_of(data: list[Any]) -> FindingRow:
    m, f, s, v, n, b, t, p = data
    return FindingRow(m, f, s, math.nan if v is None else float(v), int(n), bool(b), t, p)


def _source_json(rows: SourceRows) -> list[Any]:
    return [rows.revision, rows.events, [_row_json(r) for r in rows.breached], list(rows.judged_by)]


def _source_of(data: list[Any]) -> SourceRows:
    revision, events, breached, judged_by = data
    return SourceRows(int(revision), int(events), tuple(_row_of(r) for r in breached), tuple(judged_by))


def _breach_json(b: Breach) -> list[Any]:
    return [b.metric, b.feature, b.slice, _number(b.value), b.threshold, b.p_value, b.n, b.window_start_ms,
            b.window_end_ms, b.source, b.revision]


def _breach_of(data: list[Any]) -> Breach:
    m, f, s, v, t, p, n, start, end, source, revision = data
    return Breach(m, f, s, math.nan if v is None else float(v), t, p, int(n), int(start), int(end), source,
                  int(revision))


def transition_json(t: AlertTransition) -> dict[str, Any]:
    data = {name: getattr(t, name) for name in AlertTransition.__slots__}  # type: ignore[attr-defined]
    data["members"] = list(t.members)
    data["breaches"] = [_breach_json(b) for b in t.breaches]
    return data


def transition_of(data: dict[str, Any]) -> AlertTransition:
    values = {**data, "members": tuple(data["members"]), "breaches": tuple(_breach_of(b) for b in data["breaches"])}
    return AlertTransition(**values)


def _policy_json(p: PolicyState) -> dict[str, Any]:
    incident = None
    if (i := p.incident) is not None:
        incident = {"first_window_ms": i.first_window_ms, "members": list(i.members), "notified": i.notified,
                    "latest": transition_json(i.latest), "rollback_to": i.rollback_to,
                    "rollback_at_ms": i.rollback_at_ms}
    return {"covered_ms": p.covered_ms, "clocks": dict(sorted(p.clocks.items())), "incident": incident}


def _policy_of(data: dict[str, Any]) -> PolicyState:
    incident = None
    if (i := data["incident"]) is not None:
        incident = Incident(i["first_window_ms"], tuple(i["members"]), i["notified"], transition_of(i["latest"]),
                            i["rollback_to"], i["rollback_at_ms"])
    return PolicyState(data["covered_ms"], dict(data["clocks"]), incident)


# --- summaries -------------------------------------------------------------------------------------------

SUMMARY_LIMIT = 1024


def version_label(version: str) -> str:
    """``v3`` for version ``3``; a version already spelt with a leading v is left alone."""
    return version if version[:1] in ("v", "V") else f"v{version}"


def breach_summary(model: str, version: str, policy: str, what: str, breaches: Iterable[Breach],
                   note: str = "") -> str:
    """``fraud v3: drift breached 3 windows in a row: ks on age = 0.31 (p=2e-09, threshold 0.01), ...; +4 more``.

    The strongest evidence first (smallest p-value), one entry per member, as many as fit in `SUMMARY_LIMIT`.
    """
    head = f"{model} {version_label(version)}: {policy} {what}: "
    strongest: dict[str, Breach] = {}
    for b in sorted(breaches, key=lambda b: (b.p_value is None, b.p_value or 0.0, b.member)):
        strongest.setdefault(b.member, b)
    parts = [_describe(b) for b in strongest.values()]
    budget = SUMMARY_LIMIT - len(head) - len(note)
    shown: list[str] = []
    used = 0
    for i, part in enumerate(parts):
        rest = len(parts) - i - 1
        cost = len(part) + (2 if shown else 0) + (len(f"; +{rest} more") if rest else 0)
        if used + cost > budget:
            break
        shown.append(part)
        used += len(part) + (2 if len(shown) > 1 else 0)
    hidden = len(parts) - len(shown)
    return (head + ", ".join(shown) + (f"; +{hidden} more" if hidden else "") + note)[:SUMMARY_LIMIT]


def resolve_summary(model: str, version: str, policy: str, why: str) -> str:
    """``fraud v3: drift resolved after 2 healthy windows in a row``."""
    return f"{model} {version_label(version)}: {policy} resolved {why}"[:SUMMARY_LIMIT]


def _describe(b: Breach) -> str:
    name = b.metric + (f" on {b.feature}" if b.feature else "") + (f" [{b.slice}]" if b.slice else "")
    evidence = ([f"p={b.p_value:.2g}"] if b.p_value is not None else []) + (
        [f"threshold {b.threshold:.3g}"] if b.threshold is not None else [])
    return f"{name} = {b.value:.3g}" + (f" ({', '.join(evidence)})" if evidence else "")
