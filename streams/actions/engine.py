"""The policy engine: window findings in, alert transitions and retrain/rollback requests out. Pure logic.

Rules (copied into the README's "Acting on breaches"):

- **Policies.** A model version's policies are its ``alerting.policies``, or the built-in ``drift`` (drift,
  quality and multivariate metrics; 3 windows in a row; warning; alert and retrain), ``performance``
  (accuracy, F1, ROC AUC, RMSE, estimated accuracy, calibration, slice accuracy; 1 window; critical; alert)
  and ``sequential`` (CUSUM, Page-Hinkley, ADWIN, ... alarms on ticks; 1 window; warning; alert and
  retrain) when none is configured. A sequential alarm arrives as a ``ticks`` revision of the window that
  holds its tick, while that window is still open, ending at the tick's end (a window's end is the latest
  end its revisions carried), so it fires, and is dated, seconds after the data. Which rows a
  policy matches: `streams.actions.policies`.
- **Revisions.** Findings come per (model, version, window, source) revision. A revision no newer than the
  last one seen of its window and source is ignored, as is any window older than the last
  ``WINDOW_MEMORY`` (64) windows kept per version. A window's verdict for a policy combines the latest
  revision of each source (``predictions``, then ``labels`` as they land): **breached** if any matching
  judged row breached, **healthy** if matching rows were judged and none breached, **unknown** if no
  matching row was judged (an unknown window neither extends nor breaks a streak).
- **Trigger.** With no incident open, a policy fires when the trailing run of breached windows (in window
  order, unknown ones skipped) reaches ``min_consecutive_breaches``, counting only windows newer than every
  window an earlier incident covered, so no window fires twice however its revisions flip. The incident is
  ``<fingerprint>-<first window start>``; one incident per (model, version, policy) groups every breaching
  feature and slice as its ``members``.
- **Update.** An open incident emits ``updated`` when a new member joins (a ``Breach.member`` of its latest
  breached window that it did not list) or the policy's severity changes. Members only grow while it is
  open, so label revisions that flip a metric back and forth do not flood the receiver; its evidence is
  the latest breached window's.
- **Resolve.** An open incident resolves after ``resolve_after_windows`` healthy windows in a row
  (trailing, unknown ones skipped); after a rollback also once the target version has served that many
  healthy windows (for the same policy) in a row since the rollback decision and the rolled-back version
  breached in none of those windows (the windows it still served while the switch reached the service do
  not hold the incident open); and when its policy is removed from the configuration (on the next
  window of its version).
- **Event time.** A decision's time is the end of the window that decided it: the last window of the firing
  streak, the latest breached window of an update, the last healthy window of a resolve. Cooldowns compare
  these times, never the wall clock, so a replay decides the same.
- **Cooldowns**, per (model, version, policy) and per action (``alert``, ``retrain``, ``rollback``;
  ``cooldowns`` overrides ``cooldown_seconds`` per action): an action used less than its cooldown ago is
  skipped. For ``alert`` the transition is still returned with ``notify=False``; a trigger notifies if the
  policy alerts and its cooldown has passed; an update or a resolve notifies exactly when its trigger did
  (it goes to the incident's own dedup_key: a receiver updates or closes the incident, nobody is paged
  anew). Notified triggers restart the clock.
- **Actions.** On a trigger, ``retrain`` and ``rollback`` request their action (cooldowns permitting), with
  the firing streak's breaches and traffic range (first window start to last window end). A rollback goes
  to the version, other than the incident's, with no open incident, that served at least
  ``rollback.min_healthy_windows`` healthy windows (at least ``rollback.min_events`` events and no breached
  judged row in any source's latest revision, the events being the largest count a source reported; a later
  breaching label revision un-counts a window), the one
  whose latest healthy window is newest. A version never seen is never a target. If none qualifies, the
  engine returns `RollbackRefused` and the trigger's summary says why.
- **Configuration** is read with every findings record (``config_for(model, version)``). A changed or
  added policy applies from then on to the windows still in memory; which policies judged a window's rows is
  recorded as each revision arrives, so an added policy sees older windows' breaches but not their healthy
  rows. A removed policy's open incident resolves (above); its cooldown clocks are forgotten.
- **State.** `PolicyEngine.dirty` hands out the records changed since its last call (key
  ``<model>\\x1f<version>``, JSON, ``None`` deletes); `PolicyEngine.restore` loads them back. Restored, the
  engine decides exactly what an uninterrupted one would. At most ``MAX_VERSIONS`` (16) versions per model
  are kept: the least recently seen one without an open incident is forgotten first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from driftline.errors import InvalidRecord
from driftline.streams.actions.decisions import (
    ActionRequest,
    AlertTransition,
    Breach,
    Decision,
    RollbackRefused,
    Transition,
    fingerprint,
)
from driftline.streams.actions.findings import WindowFindings
from driftline.streams.actions.incidents import (
    WINDOW_MEMORY,
    Incident,
    PolicyState,
    SourceRows,
    Verdict,
    VersionState,
    Window,
    breach_summary,
    resolve_summary,
    version_label,
)
from driftline.streams.actions.policies import effective_policies, matches
from driftline.streams.config.model_config.schema import AlertPolicy, ResolvedModelConfig, RollbackConfig

MAX_VERSIONS = 16
SEP = "\x1f"


@dataclass(frozen=True, slots=True)
class _Stream:
    """One (model, version, policy) being judged, and the findings that woke it."""

    model: str
    version: str
    policy: AlertPolicy
    state: PolicyState
    findings: WindowFindings

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.model, self.version, self.policy.name)


class PolicyEngine:
    """Turns window findings into decisions, reading each model's findings in order (rules: module docstring).

    Examples:
        >>> from driftline.streams.actions.findings import FindingRow
        >>> from driftline.streams.config.model_config import ResolvedModelConfig
        >>> engine = PolicyEngine(lambda m, v: ResolvedModelConfig(model_id=m, model_version=v))
        >>> def window(i, p_value):  # minute i of model fraud v3: a KS test on age
        ...     row = FindingRow("ks", "age", "", 0.31, 400, p_value < 0.01, 0.01, p_value)
        ...     return WindowFindings("fraud", "3", i * 60_000, (i + 1) * 60_000, "predictions", 0, "auto", "c1",
        ...                           400, (row,))
        >>> [engine.observe(window(i, 2e-9)) for i in range(2)]  # the built-in drift policy wants 3 in a row
        [[], []]
        >>> alert, retrain = engine.observe(window(2, 2e-9))
        >>> alert.transition, alert.policy, alert.members, alert.notify, retrain.kind
        ('triggered', 'drift', ('ks:age',), True, 'retrain')
        >>> alert.summary
        'fraud v3: drift breached 3 windows in a row: ks on age = 0.31 (p=2e-09, threshold 0.01)'
        >>> engine.observe(window(2, 2e-9))  # the same revision again: ignored
        []
        >>> engine.observe(window(3, 0.4))  # healthy, but an incident closes after 2 healthy windows in a row
        []
        >>> engine.observe(window(4, 0.4))[0].summary
        'fraud v3: drift resolved after 2 healthy windows in a row'
        >>> state = engine.dirty()
        >>> list(state)
        ['fraud\\x1f3']
    """

    def __init__(self, config_for: Callable[[str, str], ResolvedModelConfig]) -> None:
        self._config_for = config_for
        self._versions: dict[tuple[str, str], VersionState] = {}
        self._dirty: set[tuple[str, str]] = set()

    # --- persistence ------------------------------------------------------------------------------------

    def dirty(self) -> dict[str, bytes | None]:
        """The state records changed since the last call: key -> JSON, or None for a record to delete."""
        out: dict[str, bytes | None] = {}
        for key in sorted(self._dirty):
            state = self._versions.get(key)
            out[SEP.join(key)] = None if state is None else state.encode()
        self._dirty.clear()
        return out

    def restore(self, key: str, value: bytes) -> None:
        """Load one record that `dirty` handed out (before observing anything); `InvalidRecord` if it is not one."""
        model, sep, version = key.partition(SEP)
        if not sep:
            raise InvalidRecord(f"alert state key {key[:80]!r} is not <model>\\x1f<version>")
        self._versions[(model, version)] = VersionState.decode(value)

    def open_incidents(self) -> list[AlertTransition]:
        """The latest transition of every open incident, by model, version and policy."""
        return [
            policy.incident.latest
            for _, state in sorted(self._versions.items())
            for _, policy in sorted(state.policies.items())
            if policy.incident is not None
        ]

    # --- judging ----------------------------------------------------------------------------------------

    def observe(self, findings: WindowFindings) -> list[Decision]:
        """Take one revision of one source's rows of a window; return what it decides (often nothing)."""
        key = (findings.model_id, findings.model_version)
        state = self._versions.get(key) or VersionState()
        if not _is_new(state, findings):
            return []
        self._versions[key] = state
        self._dirty.add(key)
        alerting = self._config_for(*key).alerting
        policies = effective_policies(alerting)
        if not _record(state, findings, policies):
            return []
        decisions: list[Decision] = []
        for policy in policies:
            stream = _Stream(*key, policy, state.policies.setdefault(policy.name, PolicyState()), findings)
            decisions += self._judge(stream, state, alerting.rollback)
        decisions += _drop_removed(state, {p.name for p in policies}, findings)
        decisions += self._after_rollback(findings)
        self._forget_old_versions(findings.model_id)
        return decisions

    def _judge(self, s: _Stream, state: VersionState, rollback: RollbackConfig) -> list[Decision]:
        verdicts = [(w, w.verdict(s.policy)) for w in state.ordered()]
        incident = s.state.incident
        if incident is None:
            streak = _trailing(verdicts, "breached", after_ms=s.state.covered_ms)
            return self._trigger(s, streak, rollback) if len(streak) >= s.policy.min_consecutive_breaches else []
        healthy = _trailing(verdicts, "healthy")
        if len(healthy) >= s.policy.resolve_after_windows:
            why = f"after {len(healthy)} healthy windows in a row"
            summary = resolve_summary(s.model, s.version, s.policy.name, why)
            return [_resolve(s, healthy[-1], summary)]
        latest = next((w for w, v in reversed(verdicts) if v == "breached" and w.start_ms >= incident.first_window_ms),
                      None)
        if latest is None:
            return []
        if s.state.covered_ms is None or latest.start_ms > s.state.covered_ms:
            s.state.covered_ms = latest.start_ms
        breaches = latest.breaches(s.policy)
        # members only grow while the incident is open: a label revision that flips one metric back and forth
        # must not page-spam the receiver; the incident lists everything that breached during it
        members = tuple(sorted(set(incident.members) | set(_members(breaches))))
        if members == incident.members and s.policy.severity == incident.latest.severity:
            return []
        # an update goes to the incident's own dedup_key (no new page), so it follows its trigger, not the cooldown
        notify = incident.notified
        summary = breach_summary(s.model, s.version, s.policy.name, "now breaches", breaches)
        transition = _transition(s, "updated", members, breaches, latest, notify, summary)
        incident.members, incident.latest = members, transition
        return [transition]

    def _trigger(self, s: _Stream, streak: list[Window], rollback: RollbackConfig) -> list[Decision]:
        first, last = streak[0], streak[-1]
        evidence = [b for w in streak for b in w.breaches(s.policy)]
        latest = last.breaches(s.policy)
        incident_id = f"{s.fingerprint}-{first.start_ms}"
        decided = last.end_ms
        notify = "alert" in s.policy.actions and _ready(s, "alert", decided)
        requests: list[Decision] = []
        rollback_to: str | None = None
        note = ""
        for kind in ("retrain", "rollback"):
            if kind not in s.policy.actions or not _ready(s, kind, decided):
                continue
            if kind == "rollback":
                rollback_to, reason = self._rollback_target(s.model, s.version, rollback)
                if rollback_to is None:
                    requests.append(RollbackRefused(s.fingerprint, incident_id, s.model, s.version, s.policy.name,
                                                    reason, decided))
                    note = f"; rollback refused: {reason}"
                    continue
                note = f"; rolling back to {version_label(rollback_to)}"
            s.state.clocks[kind] = decided
            requests.append(ActionRequest(
                kind, f"{kind}-{s.fingerprint}-{last.start_ms}", s.fingerprint, incident_id, s.model, s.version,
                s.policy.name, s.policy.severity, tuple(evidence), first.start_ms, last.end_ms, decided,
                s.findings.reference_id, s.findings.config_version, rollback_to if kind == "rollback" else None,
            ))
        what = f"breached {len(streak)} windows in a row" if len(streak) > 1 else "breached"
        summary = breach_summary(s.model, s.version, s.policy.name, what, latest, note)
        transition = AlertTransition(
            s.fingerprint, incident_id, 0, "triggered", s.model, s.version, s.policy.name, s.policy.severity,
            _members(latest), tuple(evidence), first.start_ms, last.start_ms, decided, s.findings.reference_id,
            s.findings.config_version, notify, summary,
        )
        if notify:
            s.state.clocks["alert"] = decided
        s.state.covered_ms = last.start_ms
        s.state.incident = Incident(first.start_ms, transition.members, notify, transition, rollback_to,
                                    decided if rollback_to is not None else None)
        return [transition, *requests]

    def _rollback_target(self, model: str, version: str, rails: RollbackConfig) -> tuple[str | None, str]:
        best: tuple[int, str] | None = None
        for (m, v), state in self._versions.items():
            if m != model or v == version or state.open_incident():
                continue
            healthy = [w.start_ms for w in state.windows.values() if w.healthy(rails.min_events)]
            if len(healthy) >= rails.min_healthy_windows and (best is None or (max(healthy), v) > best):
                best = (max(healthy), v)
        if best is not None:
            return best[1], ""
        return None, (f"no version of {model} other than {version} without an open incident served "
                      f"{rails.min_healthy_windows} healthy windows of at least {rails.min_events} events")

    def _after_rollback(self, findings: WindowFindings) -> list[Decision]:
        """Resolve incidents of other versions rolled back to this one, once this one has proven healthy."""
        model, target = findings.model_id, findings.model_version
        target_windows = self._versions[(model, target)].ordered()
        decisions: list[Decision] = []
        for (m, version), state in sorted(self._versions.items()):
            if m != model or version == target:
                continue
            for name, ps in sorted(state.policies.items()):
                incident = ps.incident
                if incident is None or incident.rollback_to != target or incident.rollback_at_ms is None:
                    continue
                policy = next((p for p in effective_policies(self._config_for(m, version).alerting)
                               if p.name == name), None)
                if policy is None:
                    continue  # resolved as removed with the next window of its own version
                since = incident.rollback_at_ms
                healthy = _trailing([(w, w.verdict(policy)) for w in target_windows if w.start_ms >= since], "healthy")
                if len(healthy) < policy.resolve_after_windows:
                    continue
                # traffic has moved away once the rolled-back version breached in none of the last M windows the
                # target served healthy: the windows it still served while the switch propagated do not count
                recent_from = healthy[-policy.resolve_after_windows].start_ms
                if any(w.start_ms >= recent_from and w.verdict(policy) == "breached" for w in state.windows.values()):
                    continue
                what = f"after the rollback: {version_label(target)} served {len(healthy)} healthy windows since"
                summary = resolve_summary(model, version, name, what)
                decisions.append(_resolve(_Stream(model, version, policy, ps, findings), healthy[-1], summary))
                self._dirty.add((model, version))
        return decisions

    def _forget_old_versions(self, model: str) -> None:
        versions = sorted((state.newest_ms(), v) for (m, v), state in self._versions.items() if m == model)
        excess = len(versions) - MAX_VERSIONS
        for _, version in versions:
            if excess <= 0:
                break
            if not self._versions[(model, version)].open_incident():
                del self._versions[(model, version)]
                self._dirty.add((model, version))
                excess -= 1


def _is_new(state: VersionState, f: WindowFindings) -> bool:
    if state.horizon_ms is not None and f.window_start_ms <= state.horizon_ms:
        return False
    window = state.windows.get(f.window_start_ms)
    seen = None if window is None else window.sources.get(f.source)
    return seen is None or f.revision > seen.revision


def _record(state: VersionState, f: WindowFindings, policies: Iterable[AlertPolicy]) -> bool:
    """Keep the revision as its source's latest; False if the window fell out of memory at once."""
    window = state.windows.setdefault(f.window_start_ms, Window(f.window_start_ms, f.window_end_ms))
    # a ticks revision ends at its tick, before the window does: the window's end is the latest one seen
    window.end_ms = max(window.end_ms, f.window_end_ms)
    judged_by = tuple(p.name for p in policies if any(matches(p, r) for r in f.rows))
    window.sources[f.source] = SourceRows(f.revision, f.events, tuple(r for r in f.rows if r.breached), judged_by)
    while len(state.windows) > WINDOW_MEMORY:
        evicted = min(state.windows)
        del state.windows[evicted]
        state.horizon_ms = evicted if state.horizon_ms is None else max(state.horizon_ms, evicted)
    return f.window_start_ms in state.windows


def _trailing(verdicts: list[tuple[Window, Verdict]], want: Verdict, after_ms: int | None = None) -> list[Window]:
    """The newest run of `want` windows, oldest first, skipping unknown ones (and windows up to `after_ms`)."""
    run: list[Window] = []
    for window, verdict in reversed(verdicts):
        if after_ms is not None and window.start_ms <= after_ms:
            break
        if verdict is None:
            continue
        if verdict != want:
            break
        run.append(window)
    return run[::-1]


def _members(breaches: Iterable[Breach]) -> tuple[str, ...]:
    return tuple(sorted({b.member for b in breaches}))


def _ready(s: _Stream, action: str, now_ms: int) -> bool:
    """Whether `action`'s cooldown has passed at event time `now_ms`."""
    last = s.state.clocks.get(action)
    return last is None or now_ms - last >= s.policy.cooldown(action) * 1000  # type: ignore[arg-type]


def _transition(s: _Stream, kind: Transition, members: tuple[str, ...], breaches: Iterable[Breach],
                decider: Window, notify: bool, summary: str) -> AlertTransition:
    incident = s.state.incident
    assert incident is not None
    return AlertTransition(
        s.fingerprint, incident.latest.incident_id, incident.latest.sequence + 1, kind, s.model, s.version,
        s.policy.name, s.policy.severity, members, tuple(breaches), incident.first_window_ms, decider.start_ms,
        decider.end_ms, s.findings.reference_id, s.findings.config_version, notify, summary,
    )


def _resolve(s: _Stream, decider: Window, summary: str) -> AlertTransition:
    incident = s.state.incident
    assert incident is not None
    transition = _transition(s, "resolved", incident.members, (), decider, incident.notified, summary)
    s.state.incident = None
    return transition


def _drop_removed(state: VersionState, configured: set[str], findings: WindowFindings) -> list[Decision]:
    """Forget the policies no longer configured; resolve their open incidents with this window."""
    decisions: list[Decision] = []
    model, version = findings.model_id, findings.model_version
    for name in sorted(set(state.policies) - configured):
        ps = state.policies.pop(name)
        if ps.incident is None:
            continue
        stand_in = AlertPolicy(name=name, severity=ps.incident.latest.severity)
        window = state.windows[findings.window_start_ms]
        summary = resolve_summary(model, version, name, "as its policy was removed from the configuration")
        decisions.append(_resolve(_Stream(model, version, stand_in, ps, findings), window, summary))
    return decisions

