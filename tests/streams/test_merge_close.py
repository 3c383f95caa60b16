"""The merge stage closes a model window by the same rule as each partition's windows, at the slowest watermark.

No broker: `SinkPartition.closing` is checked against `PartitionWindows.close_ready`, and the merge stage's
record handling is fed summaries and watermarks directly.
"""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.streams.config.settings import Settings
from driftline.streams.pipeline import envelope
from driftline.streams.pipeline.windows import OpenWindow, PartitionWindows, WindowKey, WindowSpec, window_order
from driftline.streams.stages.merge_stage import MergeStage, SinkPartition, _Pending

SPECS = {"fast": WindowSpec(1000, 0), "slow": WindowSpec(5000, 2000), "plain": WindowSpec(1000, 300)}


def closed_on_partition(keys: list[WindowKey], event_time_ms: int) -> list[WindowKey]:
    """The windows ``keys`` that a partition whose event time is ``event_time_ms`` closes, in its order."""
    windows: PartitionWindows[None] = PartitionWindows(0, lambda m, _v: SPECS[m], lambda *_: None,
                                                       max_event_ms=event_time_ms)
    for key in keys:
        windows.open[key] = OpenWindow(key, SPECS[key[0]], 0, (0, None), None)
    return [c.key for c in windows.close_ready()]


@settings(max_examples=300, deadline=None)
@given(windows=st.sets(st.tuples(st.sampled_from(sorted(SPECS)), st.integers(0, 12)), max_size=12),
       marks=st.lists(st.integers(0, 15_000), min_size=1, max_size=4))
def test_a_model_window_closes_when_every_partition_would_have_closed_it(windows, marks):
    keys = [(model, "1", i * SPECS[model].size_ms) for model, i in windows]
    sink = SinkPartition(n_inputs=len(marks), marks=dict(enumerate(marks)))
    sink.pending = {key: _Pending(0, SPECS[key[0]]) for key in keys}
    on_every_partition = set.intersection(*(set(closed_on_partition(keys, mark)) for mark in marks))
    assert sink.closing() == sorted(on_every_partition, key=window_order)
    assert sink.closing() == closed_on_partition(keys, min(marks))


def test_nothing_closes_before_every_input_partition_reported_a_watermark():
    sink = SinkPartition(n_inputs=2, marks={0: 10**9})
    sink.pending = {("fast", "1", 0): _Pending(0, SPECS["fast"])}
    assert sink.closing() == []
    sink.marks[1] = 1000
    assert sink.closing() == [("fast", "1", 0)]


class _Message:
    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value


class _Refusals:
    """Records what the stage dead-letters (the real one produces to the DLQ, and there is no broker here)."""

    def __init__(self) -> None:
        self.refused: list[tuple[int, str]] = []

    def refuse(self, msg: _Message, problem: Exception) -> None:
        self.refused.append((msg.offset(), str(problem)))

    def settle(self) -> None:
        pass


class _Finalizer:
    def __init__(self) -> None:
        self.closed: list[tuple[WindowKey, int, list[int]]] = []

    def rows(self, key: WindowKey, size_ms: int, parts: Any) -> list[list[Any]]:
        self.closed.append((key, size_ms, [header.partition for header, _ in parts]))
        return []

    def warming_up(self, _model_id: str, _model_version: str) -> bool:
        return False


class _Client:
    def insert(self, *_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the finalizer returned no row: nothing to insert")


def test_the_merge_stage_closes_at_the_slowest_watermark_past_the_end_plus_the_lateness():
    finalizer = _Finalizer()
    stage = MergeStage(Settings(kafka_bootstrap="127.0.0.1:1"), finalizer, _Client(), threading.Event())  # type: ignore[arg-type]
    stage.parts[0] = SinkPartition()
    stage.refusals = refusals = _Refusals()  # type: ignore[assignment]
    offsets = iter(range(1000))

    def feed(*headers: envelope.Header) -> None:
        stage._process([_Message(next(offsets), envelope.encode(h)) for h in headers])  # type: ignore[list-item]

    def summary(partition: int, start_ms: int = 0, size_ms: int = 1000) -> envelope.SummaryHeader:
        return envelope.SummaryHeader("m", "1", start_ms, size_ms, 300, partition, 2, 0, 0, 1, 0, None)

    feed(summary(0), summary(1), envelope.Watermark(0, 2, 5000), envelope.Watermark(1, 2, 1299))
    assert finalizer.closed == []  # partition 1 is 1 ms short of the end (1000) plus the lateness (300)
    feed(summary(1, size_ms=0))  # unreadable: no window of size 0, and the stage goes on
    assert refusals.refused == [(4, "WindowSpec.size_ms must be > 0, not 0")]  # dead-lettered with its reason
    feed(envelope.Watermark(1, 2, 1300))
    assert finalizer.closed == [(("m", "1", 0), 1000, [0, 1])]
    feed(summary(1))  # a replay duplicate of the closed window: dropped
    feed(summary(0, 1000), envelope.Watermark(1, 2, 2300))
    assert finalizer.closed[1:] == [(("m", "1", 1000), 1000, [0])]
    stage.consumer.close()
