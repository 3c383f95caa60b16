"""The policy engine on scripted window findings: streaks, hysteresis, cooldowns, revisions, rollback, state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.streams.actions.decisions import ActionRequest, AlertTransition, Decision, RollbackRefused, fingerprint
from driftline.streams.actions.engine import PolicyEngine
from driftline.streams.actions.findings import FindingRow, Source, WindowFindings
from driftline.streams.actions.incidents import WINDOW_MEMORY, VersionState
from driftline.streams.config.model_config.schema import ResolvedModelConfig

MIN = 60_000


def config(**alerting: Any) -> Callable[[str, str], ResolvedModelConfig]:
    def config_for(model: str, version: str) -> ResolvedModelConfig:
        return ResolvedModelConfig.model_validate({"model_id": model, "model_version": version, "alerting": alerting})

    return config_for


def policy(name: str = "p", **kw: Any) -> dict[str, Any]:
    return {"name": name, "metrics": ["ks", "chi2", "accuracy"], **kw}


def ks(feature: str = "age", breached: bool = True, p: float = 1e-9, value: float = 0.3, metric: str = "ks",
       slice_: str = "") -> FindingRow:
    return FindingRow(metric, feature, slice_, value, 400, breached, 0.01, p if breached else 0.5)


def acc(breached: bool, value: float = 0.7) -> FindingRow:
    return FindingRow("accuracy", "", "", value, 300, breached, 0.9, 1e-6 if breached else 0.4)


def win(i: int, *rows: FindingRow, version: str = "3", source: Source = "predictions", revision: int = 0,
        events: int = 500, model: str = "fraud") -> WindowFindings:
    return WindowFindings(model, version, i * MIN, (i + 1) * MIN, source, revision, "ref", "cfg", events, rows)


def B(i: int, **kw: Any) -> WindowFindings:  # breached (the helpers read like the verdicts they script)
    return win(i, ks(), **kw)


def H(i: int, **kw: Any) -> WindowFindings:  # healthy
    return win(i, ks(breached=False), **kw)


def U(i: int, **kw: Any) -> WindowFindings:  # no matching judged row: unknown
    return win(i, FindingRow("psi", "age", "", 0.1, 400, False, None, 0.5), **kw)


def run(engine: PolicyEngine, findings: list[WindowFindings]) -> list[list[Decision]]:
    return [engine.observe(f) for f in findings]


def transitions(decisions: list[list[Decision]]) -> list[tuple[int, str]]:
    """(index of the findings, transition) of every alert transition."""
    return [(i, d.transition) for i, ds in enumerate(decisions) for d in ds if isinstance(d, AlertTransition)]


# --- streaks and hysteresis ---------------------------------------------------------------------------------


def test_a_policy_fires_once_its_streak_reaches_min_consecutive_breaches_and_resolves_after_m_healthy():
    engine = PolicyEngine(config(policies=[policy(min_consecutive_breaches=3, resolve_after_windows=2)]))
    script = [B(0), B(1), H(2), B(3), B(4), B(5), B(6), H(7), B(8), H(9), H(10), B(11)]
    got = transitions(run(engine, script))
    assert got == [(5, "triggered"), (10, "resolved")]


def test_unknown_windows_neither_extend_nor_break_a_streak():
    engine = PolicyEngine(config(policies=[policy(min_consecutive_breaches=3, resolve_after_windows=2)]))
    script = [B(0), U(1), B(2), U(3), U(4), B(5), H(6), U(7), H(8)]
    assert transitions(run(engine, script)) == [(5, "triggered"), (8, "resolved")]


def test_the_trigger_carries_the_streak_as_evidence_and_ids_derived_from_its_windows():
    engine = PolicyEngine(config(policies=[policy(min_consecutive_breaches=2, actions=["alert", "retrain"])]))
    assert engine.observe(B(4)) == []
    alert, retrain = engine.observe(B(5))
    fp = fingerprint("fraud", "3", "p")
    assert isinstance(alert, AlertTransition) and isinstance(retrain, ActionRequest)
    assert (alert.incident_id, alert.sequence, alert.event_id) == (f"{fp}-{4 * MIN}", 0, f"{fp}-{4 * MIN}/0")
    assert (alert.first_window_ms, alert.last_window_ms, alert.decided_at_ms) == (4 * MIN, 5 * MIN, 6 * MIN)
    assert [b.window_start_ms for b in alert.breaches] == [4 * MIN, 5 * MIN]
    assert retrain.event_id == f"retrain-{fp}-{5 * MIN}" and retrain.incident_id == alert.incident_id
    assert (retrain.traffic_from_ms, retrain.traffic_to_ms) == (4 * MIN, 6 * MIN)
    assert retrain.breaches == alert.breaches and retrain.to_version is None


def test_built_in_policies_apply_when_none_is_configured():
    engine = PolicyEngine(config())
    assert run(engine, [B(0), B(1)]) == [[], []]
    drift = engine.observe(B(2))
    assert [(type(d).__name__, getattr(d, "policy", None)) for d in drift] == [
        ("AlertTransition", "drift"), ("ActionRequest", "drift")]
    assert drift[0].severity == "warning" and drift[1].kind == "retrain"  # type: ignore[union-attr]
    (perf,) = engine.observe(win(2, acc(True), source="labels", revision=300))
    assert isinstance(perf, AlertTransition)
    assert (perf.policy, perf.severity, perf.transition, perf.members) == ("performance", "critical", "triggered",
                                                                           ("accuracy",))


# --- one incident groups features and slices ---------------------------------------------------------------


def test_features_breaching_together_are_one_incident_updated_when_a_member_joins():
    engine = PolicyEngine(config(policies=[policy()]))
    (trig,) = engine.observe(win(0, ks("age")))
    assert trig.members == ("ks:age",)  # type: ignore[union-attr]
    assert engine.observe(win(1, ks("age", p=1e-3))) == []  # same members
    (upd,) = engine.observe(win(2, ks("age"), ks("zip", metric="chi2")))
    assert isinstance(upd, AlertTransition) and isinstance(trig, AlertTransition)
    assert (upd.transition, upd.sequence, upd.members, upd.incident_id) == ("updated", 1, ("chi2:zip", "ks:age"),
                                                                            trig.incident_id)
    assert upd.first_window_ms == 0 and upd.last_window_ms == 2 * MIN
    # a member that stops breaching stays listed (no update): label revisions flipping a metric cause no churn
    assert engine.observe(win(3, ks("age"), ks("zip", metric="chi2", breached=False))) == []
    assert engine.open_incidents() == [upd]


def test_a_severity_change_in_the_configuration_updates_the_open_incident():
    severity = {"s": "warning"}
    engine = PolicyEngine(lambda m, v: config(policies=[policy(severity=severity["s"])])(m, v))
    engine.observe(B(0))
    severity["s"] = "critical"
    (upd,) = engine.observe(B(1))
    assert (upd.transition, upd.severity) == ("updated", "critical")  # type: ignore[union-attr]


def test_slices_are_members_and_policy_globs_narrow_rows():
    engine = PolicyEngine(config(policies=[{"name": "eu", "metrics": ["slice_accuracy"], "slices": ["region=eu*"]}]))
    rows = [ks("", metric="slice_accuracy", slice_=s) for s in ("region=eu", "region=us", "region=eu&device=tv")]
    (trig,) = engine.observe(win(0, *rows))
    assert trig.members == ("slice_accuracy[region=eu&device=tv]", "slice_accuracy[region=eu]")  # type: ignore


# --- revisions ------------------------------------------------------------------------------------------------


def test_duplicate_and_older_revisions_are_ignored():
    engine = PolicyEngine(config(policies=[policy(metrics=["accuracy"])]))
    assert engine.observe(win(0, acc(False), source="labels", revision=5)) == []
    assert engine.observe(win(0, acc(True), source="labels", revision=5)) == []
    assert engine.observe(win(0, acc(True), source="labels", revision=3)) == []
    assert engine.observe(win(0, acc(True), source="labels", revision=6)) != []


def test_a_label_revision_of_an_old_window_fires_once_and_a_revised_row_is_acted_on_once():
    engine = PolicyEngine(config(policies=[policy(metrics=["accuracy"], min_consecutive_breaches=2)]))
    # windows 0..3 close with no accuracy judged (unknown); labels land later, revision by revision
    assert run(engine, [win(i, ks()) for i in range(4)]) == [[]] * 4
    assert engine.observe(win(1, acc(True), source="labels", revision=200)) == []
    (trig,) = engine.observe(win(2, acc(True), source="labels", revision=250))
    assert isinstance(trig, AlertTransition) and trig.transition == "triggered"
    assert (trig.first_window_ms, trig.decided_at_ms) == (1 * MIN, 3 * MIN)
    assert engine.observe(win(2, acc(True, value=0.6), source="labels", revision=300)) == []  # revised, same member
    assert engine.observe(win(1, acc(True), source="labels", revision=400)) == []
    assert transitions(run(engine, [win(i, acc(False), source="labels", revision=300) for i in (3, 4)])) == [
        (1, "resolved")]
    # late revisions now flip the healthy windows back: windows an incident covered never fire again, and
    # the newer ones must make a whole new streak on their own
    assert engine.observe(win(2, acc(True), source="labels", revision=900)) == []
    assert engine.observe(win(3, acc(True), source="labels", revision=900)) == []
    (again,) = engine.observe(win(4, acc(True), source="labels", revision=900))
    assert again.first_window_ms == 3 * MIN and again.incident_id != trig.incident_id  # type: ignore[union-attr]


def test_a_windows_verdict_combines_the_latest_revision_of_each_source():
    engine = PolicyEngine(config(policies=[policy(min_consecutive_breaches=1, resolve_after_windows=1)]))
    assert transitions(run(engine, [B(0), win(0, acc(False), source="labels", revision=9)])) == [(0, "triggered")]
    assert engine.open_incidents() != []  # the predictions' breach of window 0 still stands
    assert transitions([engine.observe(win(1, ks(breached=False), acc(False)))]) == [(0, "resolved")]


def test_windows_older_than_the_engines_memory_are_ignored():
    engine = PolicyEngine(config(policies=[policy()]))
    run(engine, [U(i) for i in range(1, WINDOW_MEMORY + 2)])  # window 1 falls out of memory
    engine.dirty()
    assert engine.observe(B(0)) == [] and engine.observe(B(1, revision=1)) == [] and engine.dirty() == {}
    assert engine.observe(B(2, revision=1)) != []  # the oldest window kept: the only judged one, breached
    (raw,) = engine.dirty().values()
    state = VersionState.decode(raw)  # type: ignore[arg-type]
    assert (len(state.windows), min(state.windows), state.horizon_ms) == (WINDOW_MEMORY, 2 * MIN, 1 * MIN)


# --- cooldowns ------------------------------------------------------------------------------------------------


def test_an_alert_in_its_cooldown_is_returned_without_notifying_and_so_are_its_update_and_resolve():
    engine = PolicyEngine(config(policies=[policy(cooldown_seconds=600, resolve_after_windows=1)]))
    decisions = run(engine, [B(0), H(1), B(2), win(3, ks("age"), ks("zip")), H(4), H(5), B(11), H(12)])
    notified = [(i, d.transition, d.notify) for i, ds in enumerate(decisions) for d in ds
                if isinstance(d, AlertTransition)]
    assert notified == [(0, "triggered", True), (1, "resolved", True), (2, "triggered", False),
                        (3, "updated", False), (4, "resolved", False), (6, "triggered", True),
                        (7, "resolved", True)]


def test_updates_notify_like_their_trigger_whatever_the_cooldown():
    """An update goes to the open incident's dedup_key (no new page), so the alert cooldown does not hold it."""
    engine = PolicyEngine(config(policies=[policy(cooldown_seconds=120)]))
    decisions = run(engine, [B(0), win(1, ks("age"), ks("zip")), win(2, ks("city")), win(3, ks("dob"))])
    assert [(d.transition, d.notify) for ds in decisions for d in ds] == [  # type: ignore[union-attr]
        ("triggered", True), ("updated", True), ("updated", True), ("updated", True)]


def test_an_incident_whose_trigger_did_not_notify_never_notifies_even_after_the_cooldown():
    engine = PolicyEngine(config(policies=[policy(cooldown_seconds=150, resolve_after_windows=1)]))
    decisions = run(engine, [B(0), H(1), B(2), win(5, ks("age"), ks("zip")), H(6)])
    assert [(d.transition, d.notify) for ds in decisions for d in ds] == [  # type: ignore[union-attr]
        ("triggered", True), ("resolved", True), ("triggered", False), ("updated", False), ("resolved", False)]


def test_each_action_keeps_its_own_cooldown():
    spec = policy(actions=["alert", "retrain"], cooldown_seconds=0, cooldowns={"retrain": 600},
                  resolve_after_windows=1)
    engine = PolicyEngine(config(policies=[spec]))
    decisions = run(engine, [B(0), H(1), B(2), H(3), B(10)])
    kinds = [[d.transition if isinstance(d, AlertTransition) else d.kind for d in ds]  # type: ignore[union-attr]
             for ds in decisions]
    assert kinds == [["triggered", "retrain"], ["resolved"], ["triggered"], ["resolved"], ["triggered", "retrain"]]
    assert all(d.notify for ds in decisions for d in ds if isinstance(d, AlertTransition))


def test_a_policy_without_the_alert_action_never_notifies():
    engine = PolicyEngine(config(policies=[policy(actions=["retrain"])]))
    alert, retrain = engine.observe(B(0))
    assert isinstance(alert, AlertTransition) and not alert.notify and isinstance(retrain, ActionRequest)


# --- rollback ------------------------------------------------------------------------------------------------

ROLLBACK = policy(actions=["alert", "rollback"], resolve_after_windows=2)


def healthy_version(engine: PolicyEngine, version: str, starts: range, events: int = 500) -> None:
    for i in starts:
        assert engine.observe(win(i, ks(breached=False), version=version, events=events)) == []


def test_rollback_goes_to_the_qualifying_version_whose_latest_healthy_window_is_newest():
    engine = PolicyEngine(config(policies=[ROLLBACK], rollback={"min_healthy_windows": 3, "min_events": 100}))
    healthy_version(engine, "1", range(0, 5))
    healthy_version(engine, "2", range(5, 8))
    healthy_version(engine, "4", range(8, 10))  # only 2 healthy windows
    healthy_version(engine, "5", range(10, 14), events=50)  # too little traffic
    alert, rollback = engine.observe(B(20))
    assert isinstance(rollback, ActionRequest) and rollback.kind == "rollback" and rollback.to_version == "2"
    assert isinstance(alert, AlertTransition) and "rolling back to v2" in alert.summary


def test_a_breaching_label_revision_uncounts_a_healthy_window_and_no_qualifying_version_refuses():
    engine = PolicyEngine(config(policies=[ROLLBACK], rollback={"min_healthy_windows": 3, "min_events": 100}))
    healthy_version(engine, "2", range(0, 3))
    engine.observe(win(1, FindingRow("mmd", "", "", 0.2, 400, True, 0.01, 1e-4), version="2", source="labels",
                       revision=1))
    alert, refused = engine.observe(B(5))
    assert isinstance(refused, RollbackRefused) and isinstance(alert, AlertTransition)
    assert refused.incident_id == alert.incident_id and refused.model_version == "3"
    assert "no version of fraud other than 3" in refused.reason
    assert "rollback refused: no version of fraud other than 3" in alert.summary


def test_a_version_never_seen_or_with_an_open_incident_is_never_a_target():
    engine = PolicyEngine(config(policies=[ROLLBACK], rollback={"min_healthy_windows": 1, "min_events": 0}))
    healthy_version(engine, "1", range(0, 2))
    engine.observe(B(2, version="1"))  # version 1 has an incident of its own; no version 2 was ever seen
    decisions = engine.observe(B(3, version="3"))
    assert [type(d) for d in decisions] == [AlertTransition, RollbackRefused]
    assert not [d for d in decisions if isinstance(d, ActionRequest)]


def test_an_incident_resolves_once_the_rollback_target_served_healthy_windows_since_the_decision():
    engine = PolicyEngine(config(policies=[ROLLBACK], rollback={"min_healthy_windows": 2, "min_events": 100}))
    healthy_version(engine, "2", range(0, 3))
    _, rollback = engine.observe(B(5))
    assert rollback.to_version == "2"  # type: ignore[union-attr]
    assert engine.observe(win(5, ks(breached=False), version="2")) == []  # before the decision: does not count
    assert engine.observe(win(6, ks(breached=False), version="2")) == []
    (resolved,) = engine.observe(win(7, ks(breached=False), version="2"))
    assert isinstance(resolved, AlertTransition)
    assert (resolved.transition, resolved.model_version, resolved.sequence) == ("resolved", "3", 1)
    assert "after the rollback: v2 served 2 healthy windows since" in resolved.summary
    assert engine.open_incidents() == []


def test_no_resolution_after_a_rollback_while_the_rolled_back_version_still_breaches():
    engine = PolicyEngine(config(policies=[ROLLBACK], rollback={"min_healthy_windows": 2, "min_events": 100}))
    healthy_version(engine, "2", range(0, 3))
    engine.observe(B(5))
    engine.observe(B(6))  # version 3 still served the next window while the switch reached the service
    # version 3 keeps serving (and breaching) beside version 2's healthy windows: traffic has not moved away
    assert run(engine, [win(7, ks(breached=False), version="2"), B(7), win(8, ks(breached=False), version="2"),
                        B(8)]) == [[], [], [], []]
    # then only version 2 serves: two healthy windows with no breach of version 3 among them resolve it
    (resolved,) = [d for ds in run(engine, [win(i, ks(breached=False), version="2") for i in (9, 10)]) for d in ds]
    assert isinstance(resolved, AlertTransition) and resolved.transition == "resolved"
    assert resolved.decided_at_ms == 11 * MIN and "after the rollback" in resolved.summary


# --- configuration changes --------------------------------------------------------------------------------


def test_removing_a_policy_resolves_its_open_incident_with_the_next_window():
    policies = {"list": [policy("a"), policy("b")]}
    engine = PolicyEngine(lambda m, v: config(policies=policies["list"])(m, v))
    assert transitions([engine.observe(B(0))]) == [(0, "triggered"), (0, "triggered")]
    policies["list"] = [policy("a")]
    (resolved,) = engine.observe(B(1))
    assert (resolved.policy, resolved.transition) == ("b", "resolved")  # type: ignore[union-attr]
    assert "policy was removed" in resolved.summary  # type: ignore[union-attr]
    assert [t.policy for t in engine.open_incidents()] == ["a"]


# --- summary -------------------------------------------------------------------------------------------------


def test_the_summary_names_what_breached_strongest_first_and_fits_1024_characters():
    engine = PolicyEngine(config(policies=[policy(min_consecutive_breaches=1)]))
    rows = [ks(f"feature_{i:03d}", p=10.0 ** -(i % 9 + 2)) for i in range(200)]
    (alert,) = engine.observe(win(0, *rows))
    summary = alert.summary  # type: ignore[union-attr]
    assert summary.startswith("fraud v3: p breached: ks on feature_008 = 0.3 (p=1e-10, threshold 0.01), ")
    assert len(summary) <= 1024 and summary.endswith(" more") and "; +" in summary
    shown = summary.count(" on feature_")
    assert summary.endswith(f"; +{200 - shown} more")


# --- state: a restored engine decides what an uninterrupted one does ----------------------------------------


def script_of(steps: list[tuple[int, int, bool, int]]) -> list[WindowFindings]:
    """(window, version, breached, labels revision or 0 for predictions) -> findings."""
    out = []
    for window, version, breached, revision in steps:
        both = breached and window % 2 == 1
        rows = (acc(breached),) if revision else (ks(breached=breached), ks("zip", breached=both))
        out.append(win(window, *rows, version=str(version), source="labels" if revision else "predictions",
                       revision=revision, events=50 + 40 * window))
    return out


STATEFUL = config(
    policies=[policy("d", min_consecutive_breaches=2, cooldown_seconds=180, actions=["alert", "retrain", "rollback"]),
              policy("q", metrics=["accuracy"], resolve_after_windows=1, cooldowns={"alert": 0})],
    rollback={"min_healthy_windows": 2, "min_events": 100},
)
steps = st.lists(st.tuples(st.integers(0, 11), st.integers(1, 3), st.booleans(), st.integers(0, 3)), max_size=40)


def assert_restorable(config_for: Callable[[str, str], ResolvedModelConfig], script: list[WindowFindings]) -> None:
    """Cut `script` at every point: a fresh engine restored from the changelog so far decides the rest the same."""
    whole = PolicyEngine(config_for)
    expected = run(whole, script)
    for cut in range(len(script) + 1):
        first = PolicyEngine(config_for)
        changelog: dict[str, bytes] = {}  # a compacted topic: the latest value per key, None deletes
        got = []
        for findings in script[:cut]:
            got.append(first.observe(findings))
            for key, value in first.dirty().items():
                if value is None:
                    changelog.pop(key, None)
                else:
                    changelog[key] = value
        fresh = PolicyEngine(config_for)
        for key, value in changelog.items():
            fresh.restore(key, value)
        got += run(fresh, script[cut:])
        assert got == expected, cut
        assert fresh.open_incidents() == whole.open_incidents()


@settings(max_examples=80, deadline=None)
@given(steps)
def test_a_restored_engine_decides_exactly_what_an_uninterrupted_one_does(script_steps):
    assert_restorable(STATEFUL, script_of(script_steps))


def test_restoring_keeps_the_windows_incidents_covered_and_the_rollbacks_in_progress():
    late_labels = [*[win(i, ks()) for i in range(4)],
                   *[win(i, acc(True), source="labels", revision=300) for i in (1, 2)],
                   *[win(i, acc(False), source="labels", revision=300) for i in (3, 4)],
                   *[win(i, acc(True), source="labels", revision=900) for i in (2, 3, 4, 5)]]
    assert_restorable(config(policies=[policy(metrics=["accuracy"], min_consecutive_breaches=2)]), late_labels)
    rollback = [*[win(i, ks(breached=False), version="2") for i in range(3)], B(5),
                *[win(i, ks(breached=False), version="2") for i in (5, 6, 7)], B(8), B(9, version="2")]
    assert_restorable(config(policies=[ROLLBACK], rollback={"min_healthy_windows": 2, "min_events": 100}), rollback)
    quiet = [B(0), H(1), B(2), win(5, ks("age"), ks("zip")), H(6), B(7), win(8, ks("zip"))]
    assert_restorable(config(policies=[policy(cooldown_seconds=150, resolve_after_windows=1)]), quiet)


def test_dirty_hands_out_only_changed_records_and_each_record_round_trips():
    engine = PolicyEngine(config(policies=[policy()]))
    engine.observe(B(0))
    engine.observe(B(0, version="4"))
    first = engine.dirty()
    assert sorted(first) == ["fraud\x1f3", "fraud\x1f4"] and engine.dirty() == {}
    engine.observe(H(1, version="4"))
    assert list(engine.dirty()) == ["fraud\x1f4"]
    for value in first.values():
        assert value is not None and VersionState.decode(value).encode() == value


def test_old_versions_without_open_incidents_are_forgotten_and_their_records_deleted():
    engine = PolicyEngine(config(policies=[policy()]))
    engine.observe(B(0, version="0"))
    for v in range(1, 18):
        engine.observe(H(v, version=str(v)))
    deleted = [k for k, value in engine.dirty().items() if value is None]
    assert deleted == ["fraud\x1f1", "fraud\x1f2"]  # 18 versions, 16 kept; version 0 is the oldest, but open


def test_state_keys_start_with_the_model_id_and_a_unit_separator():
    engine = PolicyEngine(config())
    engine.observe(win(0, ks(), model="churn", version="a:b"))
    assert list(engine.dirty()) == ["churn\x1fa:b"]


# --- sequential alarms ----------------------------------------------------------------------------------------


def test_a_sequential_alarm_fires_at_its_ticks_end_and_windows_without_alarms_resolve_it():
    """A ``ticks`` revision of an open window triggers the built-in sequential policy, dated at the tick's end;
    the window's own rows later extend its end; two windows whose CUSUM rows stayed under h resolve it."""
    engine = PolicyEngine(config())
    cusum = FindingRow("cusum", "tenure", "", 9.1, 250, True, 7.9, None)
    alarm = WindowFindings("fraud", "3", 2 * MIN, 2 * MIN + 25_000, "ticks", 1, "ref", "cfg", 0, (cusum,))
    trigger, retrain = engine.observe(alarm)
    assert isinstance(trigger, AlertTransition) and isinstance(retrain, ActionRequest)
    assert (trigger.policy, trigger.transition, trigger.members, trigger.decided_at_ms) == (
        "sequential", "triggered", ("cusum:tenure",), 2 * MIN + 25_000)
    assert retrain.kind == "retrain"
    assert engine.observe(alarm) == []  # the same revision again: nothing
    closed = win(2, FindingRow("cusum", "tenure", "", 9.1, 12, True, 7.9, None))
    assert engine.observe(closed) == []  # the window's own rows: the same incident, no second trigger
    quiet = [win(i, FindingRow("cusum", "tenure", "", 1.2, 12, False, 7.9, None)) for i in (3, 4)]
    assert engine.observe(quiet[0]) == []
    (resolved,) = engine.observe(quiet[1])
    assert isinstance(resolved, AlertTransition)
    assert (resolved.policy, resolved.transition, resolved.decided_at_ms) == ("sequential", "resolved", 5 * MIN)
