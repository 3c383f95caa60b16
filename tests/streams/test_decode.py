"""The fast validator agrees with the JSON Schemas in schemas/ and names the reason of every reject."""

from __future__ import annotations

import copy

import jsonschema
import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline import schemas
from driftline.streams.pipeline.decode import (
    _FAST,
    BadEventTime,
    EventTimeBounds,
    InvalidRecord,
    _checked_prediction,
    decode_label,
    decode_prediction,
    parse_ts,
)

VALID = {
    "schema_version": 1, "prediction_id": "p-1", "model_id": "m", "model_version": "3",
    "ts": "2026-11-23T10:15:00.120Z", "features": {"amount": 129.5, "country": "FR", "age": None, "vip": True},
    "prediction": {"label": "fraud", "score": 0.93, "probabilities": {"fraud": 0.93, "ok": 0.07}},
    "segments": {"tier": "gold"},
}
FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER


def schema_accepts(obj: object, name: str = schemas.PREDICTION_V1) -> bool:
    validator = jsonschema.Draft202012Validator(schemas.load(name), format_checker=FORMAT_CHECKER)
    return validator.is_valid(obj)


def decoder_accepts(obj: object) -> bool:
    try:
        decode_prediction(orjson.dumps(obj))
    except InvalidRecord:
        return False
    return True


def mutate(path: tuple[str, ...], value: object, base: dict = VALID) -> dict:
    obj = copy.deepcopy(base)
    target = obj
    for part in path[:-1]:
        target = target[part]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


CASES = [
    ((), None),
    (("schema_version",), 2), (("schema_version",), "1"), (("schema_version",), True),
    (("prediction_id",), ""), (("prediction_id",), "x" * 129), (("prediction_id",), 12),
    (("model_id",), KeyError), (("model_version",), None), (("ts",), KeyError),
    (("ts",), "yesterday"), (("ts",), -5), (("ts",), 1.5), (("ts",), 1_700_000_000_000),
    (("features",), []), (("features", "amount"), [1, 2]), (("features", "amount"), {"a": 1}),
    (("prediction",), {}), (("prediction", "score"), 1.5), (("prediction", "score"), "high"),
    (("prediction", "probabilities"), {}), (("prediction", "probabilities", "ok"), -0.1),
    (("prediction", "value"), "3"), (("prediction", "other"), 1), (("segments",), {"tier": 3}),
    (("segments",), KeyError), (("extra",), 1),
]


@pytest.mark.parametrize(("path", "value"), CASES)
def test_decoder_agrees_with_the_json_schema(path, value):
    obj = copy.deepcopy(VALID) if not path else mutate(path, value)
    assert decoder_accepts(obj) == schema_accepts(obj), obj


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5))


@settings(max_examples=300, deadline=None)
@given(features=st.dictionaries(st.text(min_size=1, max_size=4), st.one_of(scalars, st.lists(scalars, max_size=2)),
                                 max_size=4),
       score=st.one_of(st.floats(-1, 2, allow_nan=False), st.text(max_size=2)),
       version=st.one_of(st.just(1), st.integers(0, 3), st.text(max_size=1)))
def test_decoder_agrees_with_the_schema_on_generated_records(features, score, version):
    obj = {**VALID, "features": features, "prediction": {"score": score}, "schema_version": version}
    assert decoder_accepts(obj) == schema_accepts(obj)


def test_label_decoder_agrees_with_the_label_schema():
    label = {"schema_version": 1, "prediction_id": "p-1", "model_id": "m", "ts": 1_700_000_000_000, "label": "ok"}
    assert schema_accepts(label, schemas.LABEL_V1)
    assert decode_label(orjson.dumps(label)).label == "ok"
    for bad in ({**label, "label": [1]}, {k: v for k, v in label.items() if k != "ts"}, {**label, "x": 1}):
        assert not schema_accepts(bad, schemas.LABEL_V1)
        with pytest.raises(InvalidRecord):
            decode_label(orjson.dumps(bad))


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"schema_version": 1, ', "not valid JSON"),
    (b'{"amount": NaN}', "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (None, "tombstone"),
    (b"{" + b" " * 1_100_000 + b"}", "record too large"),
    (orjson.dumps({**VALID, "features": {"a": [1]}}), "features.a: must be a number, string, boolean or null"),
    (orjson.dumps({k: v for k, v in VALID.items() if k not in ("model_id", "ts")}),
     "missing required field(s): model_id, ts"),
])
def test_rejects_say_why(raw, reason):
    with pytest.raises(InvalidRecord, match=None) as info:
        decode_prediction(raw)
    assert reason in str(info.value)


def test_timestamps_parse_to_exact_milliseconds():
    assert parse_ts("2026-01-01T00:00:00.123Z") == 1_767_225_600_123
    assert parse_ts("2026-01-01T01:00:00.123+01:00") == 1_767_225_600_123
    assert parse_ts(1_767_225_600_123) == 1_767_225_600_123
    with pytest.raises(InvalidRecord, match="offset"):
        parse_ts("2026-01-01T00:00:00")


values = st.one_of(scalars, st.integers(), st.floats(), st.text(min_size=120, max_size=300),
                   st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars, max_size=3))
paths = st.sampled_from([p for p, _ in CASES if p] + [("prediction", "label"), ("prediction", "probabilities"),
                                                       ("features", "vip"), ("segments", "tier"), ("ts",)])


@settings(max_examples=1500, deadline=None)
@given(edits=st.lists(st.tuples(paths, st.one_of(st.just(KeyError), values)), max_size=3))
def test_the_typed_decoder_accepts_nothing_the_contract_check_refuses(edits):
    """The fast path may refuse more (the check then decides) but never accept more, nor read differently."""
    obj = copy.deepcopy(VALID)
    for path, value in edits:
        try:
            obj = mutate(path, value, obj)
        except (KeyError, TypeError):
            continue
    try:
        raw = orjson.dumps(obj)
    except TypeError:
        return
    try:
        fast = _FAST.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return
    assert _checked_prediction(raw) == fast, obj


def test_both_paths_read_a_valid_record_alike():
    raw = orjson.dumps({**VALID, "ts": 1_767_225_600_123, "features": {"n": 3, "x": 1.5, "s": "a", "b": False,
                                                                       "z": None}})
    fast, checked = _FAST.decode(raw), _checked_prediction(raw)
    assert fast == checked and fast.ts_ms == 1_767_225_600_123 and fast.prediction.score == 0.93
    assert decode_prediction(orjson.dumps(VALID)).ts_ms == parse_ts(VALID["ts"])


BOUNDS = EventTimeBounds(max_skew_ms=3_600_000, max_age_ms=3650 * 86_400_000)
NOW = parse_ts("2026-11-30T12:00:00Z")


def verdict(ts_ms: int, record_ms: int, now_ms: int = NOW) -> str:
    try:
        BOUNDS.check(ts_ms, record_ms, now_ms)
    except BadEventTime as exc:
        return exc.kind
    return "ok"


def test_event_times_far_ahead_or_implausibly_old_are_refused_with_the_reason():
    with pytest.raises(BadEventTime) as info:
        BOUNDS.check(parse_ts("2200-01-01T00:00:00Z"), NOW - 2000, NOW)
    assert (info.value.kind, str(info.value)) == (
        "future", "ts: 2200-01-01T00:00:00Z is 173 years ahead of the record's time (max skew 3600 s)")
    with pytest.raises(BadEventTime) as info:
        BOUNDS.check(0, NOW, NOW)
    assert (info.value.kind, str(info.value)) == (
        "too_old", "ts: 1970-01-01T00:00:00Z is 57 years older than the record's time (max age 3650 days)")
    record = NOW - 60_000
    assert verdict(record + 3_600_000, record) == "ok"  # exactly the skew
    assert verdict(record + 3_600_001, record) == "future"
    assert verdict(parse_ts("2026-01-05T00:00:00Z"), record) == "ok"  # a backfill of last January
    assert verdict(record - 3650 * 86_400_000, record) == "ok"
    assert verdict(record - 3650 * 86_400_000 - 1, record) == "too_old"


def test_the_reference_is_the_record_time_capped_by_the_worker_clock():
    """A producer whose clock runs ahead stamps its record ahead too: it cannot vouch for its own events."""
    ahead = NOW + 5 * 3_600_000
    with pytest.raises(BadEventTime, match="is 5 hours ahead of the worker's clock"):
        BOUNDS.check(ahead, ahead, NOW)
    assert verdict(NOW + 7_200_000, -1) == "future"  # no Kafka timestamp: the clock decides
    assert verdict(NOW + 1_800_000, -1) == "ok"


DAY = 86_400_000


@settings(max_examples=500, deadline=None)
@given(ts=st.one_of(st.integers(BOUNDS.max_skew_ms - DAY, BOUNDS.max_skew_ms + DAY),
                    st.integers(-BOUNDS.max_age_ms - DAY, -BOUNDS.max_age_ms + DAY)).map(lambda d: NOW + d),
       read_before=st.integers(0, DAY), later=st.integers(0, DAY))
def test_a_record_is_judged_alike_on_every_read(ts, read_before, later):
    """A replay after a crash, or a backtest a day later, refuses exactly what the first read refused."""
    record = NOW - read_before  # produced before it was read, as by any producer whose clock is not ahead
    assert verdict(ts, record, NOW) == verdict(ts, record, NOW + later)
