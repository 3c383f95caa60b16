"""Silences: durations, what a silence mutes and when, and (with the real broker) the compacted topic a follower
reads to its end: published, deleted by a tombstone, expired."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from typer.testing import CliRunner

from driftline.errors import ConfigurationError
from driftline.streams.actions import silences
from driftline.streams.actions.commands import alerts_app
from driftline.streams.actions.silences import BadDuration, Silence, SilenceFollower, new_silence, parse_duration
from driftline.streams.kafka import topics
from tests.conftest import settings_of

T0 = datetime(2025, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)),
                                                ("1d", timedelta(days=1)), ("1h30m", timedelta(minutes=90)),
                                                ("45s", timedelta(seconds=45)), (" 2W ", timedelta(weeks=2)),
                                                ("365d", timedelta(days=365))])
def test_durations(text: str, expected: timedelta):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "-1h", "1.5h", "2h and 3m", "0m", "366d"])
def test_a_bad_duration_is_a_configuration_error_quoting_it(text: str):
    with pytest.raises(BadDuration, match=f"--for '{text}'") as info:
        parse_duration(text)
    assert isinstance(info.value, ConfigurationError)


def test_the_cli_rejects_a_bad_duration_as_a_usage_error():
    result = CliRunner().invoke(alerts_app, ["silence", "--model", "m", "--for", "soon", "--reason", "r"])
    assert result.exit_code == 2 and "expected a duration like 30m, 2h, 1d" in result.output


def test_what_a_silence_mutes_and_when(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("USER", "ana")
    everything = new_silence("fraud-*", None, timedelta(hours=2), "deploy", now=T0)
    one_policy = new_silence("churn", "accuracy", timedelta(minutes=30), "relabelling", now=T0)
    assert everything.created_by == "ana" and everything.ends_at == T0 + timedelta(hours=2)
    assert everything.mutes("fraud-eu", "drift", T0) and everything.mutes("fraud-us", "accuracy", T0)
    assert not everything.mutes("fraud-eu", "drift", T0 - timedelta(seconds=1))
    assert not everything.mutes("fraud-eu", "drift", T0 + timedelta(hours=2))
    assert not everything.mutes("fraudster", "drift", T0)
    assert one_policy.mutes("churn", "accuracy", T0) and not one_policy.mutes("churn", "drift", T0)
    assert not one_policy.mutes("churn-v2", "accuracy", T0)
    monkeypatch.delenv("USER")
    assert new_silence("m", "", timedelta(hours=1), "r").created_by == "driftline"
    assert new_silence("m", "", timedelta(hours=1), "r").policy is None


def test_a_silence_round_trips_as_json():
    made = new_silence("fraud", "drift", timedelta(hours=1), "deploy", now=T0)
    assert msgspec.json.decode(msgspec.json.encode(made), type=Silence) == made
    assert b'"starts_at":"2025-01-01T12:00:00Z"' in msgspec.json.encode(made)


@pytest.mark.integration
def test_a_follower_reads_the_topic_to_its_end_and_keeps_following(env_for):
    settings = settings_of(env_for())
    topics.ensure_topics(settings)
    now = datetime.now(UTC)
    kept = new_silence("fraud", None, timedelta(hours=1), "deploy")
    deleted = new_silence("fraud", "drift", timedelta(days=1), "typo")
    expired = new_silence("churn", None, timedelta(minutes=1), "old", now=now - timedelta(minutes=5))
    for silence in (kept, deleted, expired):
        silences.publish(settings, silence)
    silences.delete(settings, deleted.id)
    follower = SilenceFollower(settings)
    try:
        follower.catch_up()
        assert set(follower.silences) == {kept.id, expired.id}
        assert follower.active(datetime.now(UTC)) == [kept]
        assert follower.muting("fraud", "drift", datetime.now(UTC)) == kept
        assert follower.muting("churn", "drift", datetime.now(UTC)) is None
        later = new_silence("churn", None, timedelta(hours=3), "incident")
        silences.publish(settings, later)
        deadline = time.monotonic() + 10
        while later.id not in follower.silences and time.monotonic() < deadline:
            follower.poll(0.2)
        assert follower.muting("churn", "drift", datetime.now(UTC)) == later
        # the longest-lasting of two matching silences is the one reported
        assert follower.muting("fraud", "drift", datetime.now(UTC)) == kept
    finally:
        follower.close()
