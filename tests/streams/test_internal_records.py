"""Every reader of driftline's own topics, fed any bytes or any JSON: a record, or `InvalidRecord`, never else."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.errors import InvalidRecord
from driftline.streams.actions.events import delivery_row
from driftline.streams.actions.findings import WindowFindings
from driftline.streams.actions.incidents import VersionState
from driftline.streams.pipeline import envelope, internal
from driftline.streams.pipeline.join_store import PartitionJoinStore
from driftline.streams.references.book import Reference
from driftline.streams.stages.tick_detection import _Watch

FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def join_state(raw: bytes) -> None:
    store = PartitionJoinStore(ttl_ms=10**12, max_entries=100)
    try:
        store.apply(raw)
    except InvalidRecord:
        assert not store.entries, "a refused record applies nothing"
        raise


READERS: dict[str, Callable[[bytes], object]] = {
    "summaries": envelope.decode,
    "findings": WindowFindings.decode,
    "alert-state": VersionState.decode,
    "tick-state": _Watch.from_json,
    "references": Reference.decode,
    "join-state": join_state,
    "alert-deliveries": lambda raw: delivery_row(internal.decoded(orjson.loads, raw, "alert delivery")),
}
json_docs = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25)


def only_invalid_record(read: Callable[[bytes], object], raw: bytes) -> None:
    try:
        read(raw)
    except InvalidRecord as exc:
        assert str(exc)


@pytest.mark.parametrize("topic", READERS)
@FUZZ
@given(raw=st.binary(max_size=300))
def test_any_bytes(topic: str, raw: bytes) -> None:
    only_invalid_record(READERS[topic], raw)


@pytest.mark.parametrize("topic", READERS)
@FUZZ
@given(doc=json_docs)
def test_any_json(topic: str, doc: Any) -> None:
    only_invalid_record(READERS[topic], json.dumps(doc).encode())


def framed(head: dict[str, Any]) -> bytes:
    data = json.dumps(head).encode()
    return len(data).to_bytes(4, "big") + data


WATERMARK = {"type": "watermark", "partition": 0, "partitions": 1, "event_time_ms": 5}


@FUZZ
@given(field=st.sampled_from(["partition", "partitions", "event_time_ms"]), value=json_docs)
def test_a_header_field_of_another_type_is_refused(field: str, value: Any) -> None:
    head = {**WATERMARK, field: value}
    if type(value) is int and abs(value) < 2**63:  # orjson reads integers up to 64 bits
        envelope.decode(framed(head))
        return
    with pytest.raises(InvalidRecord, match=f"watermark envelope header.{field}: must be int|not valid JSON|not JSON"):
        envelope.decode(framed(head))


def test_valid_records_still_read() -> None:
    findings = WindowFindings("m", "1", 0, 60_000, "predictions", 0, "r", "c", 10, ())
    assert WindowFindings.decode(findings.encode()) == findings
    assert VersionState.decode(VersionState().encode()) == VersionState()


def test_an_engine_state_with_sequential_evidence_reads_back() -> None:
    """Breaches from ticks (a sequential alarm) are in the state too: the type check must know that source."""
    from tests.actions.test_engine import assert_restorable, config, ks, policy, win

    assert_restorable(config(policies=[policy()]), [win(i, ks(), source="ticks") for i in range(4)])
