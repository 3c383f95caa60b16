"""Hostile bytes through the input decoders: a record is valid or has a dead-letter reason, nothing else."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.streams.pipeline.decode import (
    EventTimeBounds,
    InvalidRecord,
    Label,
    Prediction,
    decode_label,
    decode_prediction,
)
from driftline.streams.pipeline.records import read_label, read_prediction
from tests.integration.hostile import Hostile, hostile_label, hostile_prediction

NOW_MS = 1_780_000_000_000  # 2026-05-28
TS_MS = NOW_MS - 86_400_000
BOUNDS = EventTimeBounds(max_skew_ms=3_600_000, max_age_ms=3650 * 86_400_000)
FUZZ = settings(max_examples=600, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def verdict(decode: Any, raw: bytes | None) -> object:
    """The decoded record, or the reason; any other exception fails the test where it is raised."""
    try:
        return decode(raw)
    except InvalidRecord as exc:
        assert str(exc), "a reject must say why"
        return exc


@FUZZ
@given(raw=st.binary(max_size=2000) | st.none())
def test_any_bytes_decode_to_a_record_or_a_reason(raw: bytes | None) -> None:
    assert isinstance(verdict(decode_prediction, raw), Prediction | InvalidRecord)
    assert isinstance(verdict(decode_label, raw), Label | InvalidRecord)


json_docs = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30)
near_valid = st.fixed_dictionaries({}, optional={
    "schema_version": st.sampled_from([1, 1.0, 2, "1", None]), "prediction_id": st.text(max_size=130),
    "model_id": st.text(max_size=4), "model_version": st.text(max_size=4), "label": json_docs,
    "ts": st.integers(-10, 2**63) | st.text(max_size=30) | json_docs,
    "features": st.dictionaries(st.text(max_size=3), json_docs, max_size=3) | json_docs,
    "prediction": st.fixed_dictionaries({}, optional={"score": json_docs, "label": json_docs,
                                                       "probabilities": json_docs, "value": json_docs}) | json_docs,
    "segments": st.dictionaries(st.text(max_size=3), st.text(max_size=3) | json_docs, max_size=3) | json_docs,
})


@FUZZ
@given(doc=json_docs | near_valid)
def test_any_json_document_decodes_to_a_record_or_a_reason(doc: Any) -> None:
    raw = json.dumps(doc).encode()  # big integers, NaN, Infinity and lone surrogates (escaped) as Python writes them
    assert isinstance(verdict(decode_prediction, raw), Prediction | InvalidRecord)
    assert isinstance(verdict(decode_label, raw), Label | InvalidRecord)


def record(h: Hostile) -> SimpleNamespace:
    return SimpleNamespace(value=lambda: h.value, key=lambda: h.key, timestamp=lambda: (1, NOW_MS))


@FUZZ
@given(h=hostile_prediction("p-1", "m", "1", TS_MS))
def test_hostile_predictions_are_refused_with_a_reason_and_odd_valid_ones_read(h: Hostile) -> None:
    got = verdict(lambda _raw: read_prediction(record(h), BOUNDS, NOW_MS), h.value)
    assert isinstance(got, Prediction) == h.valid, (h.kind, h.key, (h.value or b"")[:300], got)


@FUZZ
@given(h=hostile_label("p-1", "m", TS_MS))
def test_hostile_labels_are_refused_with_a_reason_and_odd_valid_ones_read(h: Hostile) -> None:
    got = verdict(lambda _raw: read_label(record(h), BOUNDS, NOW_MS), h.value)
    assert isinstance(got, Label) == h.valid, (h.kind, h.key, (h.value or b"")[:300], got)


def test_ten_megabyte_strings_are_refused_before_parsing() -> None:
    for decode in (decode_prediction, decode_label):
        for raw in (b'{"model_id": "' + b"m" * 10_485_760 + b'"}', b"[" * 10_485_760):
            got = verdict(decode, raw)
            assert isinstance(got, InvalidRecord) and str(got).startswith("record too large: 104857")
