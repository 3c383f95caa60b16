"""PII controls of the SDK: dropped and hashed features and segments, the key from the environment only."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from driftline.serving.monitor import Monitor
from driftline.serving.pii import PiiPolicy

KEY = "k3y-0f-the-pii-hmac-for-tests-only"
POLICY = PiiPolicy(drop=("ssn",), hash=("email",), key_env="TEST_DRIFTLINE_PII_KEY")


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DRIFTLINE_PII_KEY", KEY)


def expected(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def test_dropped_fields_vanish_and_hashed_ones_become_their_keyed_digest(keyed: None):
    redactor = POLICY.redactor()
    out = redactor.apply({"email": "ana@example.com", "ssn": "078-05-1120", "amount": 12.5, "other": None})
    assert out == {"email": expected("ana@example.com"), "amount": 12.5, "other": None}
    assert redactor.apply({"email": None}) == {"email": None}  # missing stays missing
    assert redactor.digest(True) == expected("true")  # other values: their JSON text


def test_the_digest_is_stable_and_depends_on_the_key(keyed: None, monkeypatch: pytest.MonkeyPatch):
    first = POLICY.redactor().digest("ana@example.com")
    assert POLICY.redactor().digest("ana@example.com") == first
    monkeypatch.setenv("TEST_DRIFTLINE_PII_KEY", KEY + "-rotated")
    assert POLICY.redactor().digest("ana@example.com") != first


@pytest.mark.parametrize(("value", "state"), [(None, "is not set"), ("short", "holds fewer than 16 bytes")])
def test_hashing_without_a_usable_key_fails_at_construction(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                                           state: str):
    monkeypatch.delenv("TEST_DRIFTLINE_PII_KEY", raising=False)
    if value is not None:
        monkeypatch.setenv("TEST_DRIFTLINE_PII_KEY", value)
    with pytest.raises(ValueError, match=f"key variable TEST_DRIFTLINE_PII_KEY {state}"):
        Monitor("127.0.0.1:1", model_id="m", model_version="1", pii=POLICY)


def test_a_policy_that_only_drops_needs_no_key(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DRIFTLINE_PII_KEY", raising=False)
    assert PiiPolicy(drop=("ssn",)).redactor().apply({"ssn": "x", "a": 1}) == {"a": 1}


def test_a_contradictory_or_malformed_policy_is_refused():
    with pytest.raises(ValueError, match="both dropped and hashed"):
        PiiPolicy(drop=("email",), hash=("email",))
    with pytest.raises(TypeError, match="tuple of field names"):
        PiiPolicy(hash="email")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="environment variable name"):
        PiiPolicy(hash=("email",), key_env=KEY)  # the key itself where its variable's name belongs


def test_the_key_is_in_no_repr(keyed: None):
    redactor = POLICY.redactor()
    assert KEY not in repr(redactor) and KEY not in repr(POLICY)


def test_the_monitor_applies_the_policy_to_features_and_segments_before_sending(keyed: None):
    monitor = Monitor("127.0.0.1:1", model_id="m", model_version="1", pii=POLICY)
    sent: list[bytes] = []
    monitor._send = lambda topic, key, value: sent.append(value)  # type: ignore[method-assign]
    monitor.log_prediction("p-1", {"email": "ana@example.com", "ssn": "078-05-1120", "amount": 3}, score=0.5,
                           segments={"email": "ana@example.com", "tier": "gold"})
    monitor.close(timeout=0)
    event = orjson.loads(sent[0])
    assert event["features"] == {"email": expected("ana@example.com"), "amount": 3}
    assert event["segments"] == {"email": expected("ana@example.com"), "tier": "gold"}
    assert b"ana@example.com" not in sent[0] and b"078-05-1120" not in sent[0]
