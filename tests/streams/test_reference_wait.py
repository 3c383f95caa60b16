"""Where a partition waits for an automatic reference: never before the data it is learnt from, and exactly
at the window the merge stage makes it effective from when the partition sees every warm-up window."""

from __future__ import annotations

from confluent_kafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.streams.kafka import kafka_io
from driftline.streams.pipeline.windows import PartitionWindows, fixed_shape
from driftline.streams.references.wait import Hold, PartitionReferenceWait, effective_from

SIZE, LATENESS, K = 1000, 200, 3


def fresh() -> PartitionWindows[None]:
    return PartitionWindows(0, fixed_shape(SIZE, LATENESS), lambda *_: None)


def at(event_time_ms: int) -> PartitionWindows[None]:
    windows = fresh()
    windows.max_event_ms = event_time_ms
    return windows


def waiting(awaited: dict[tuple[str, str], int]) -> PartitionReferenceWait:
    return PartitionReferenceWait(lambda m, v: awaited.get((m, v)), fixed_shape(SIZE, LATENESS))


def test_holds_the_first_record_of_the_window_the_reference_applies_to():
    wait = waiting({("m", "1"): K})
    ts = [0, 500, 1200, 2100, 2900, 3500, 4999, 5000, 5001]
    held = wait.first_held(fresh(), ["m"] * len(ts), ["1"] * len(ts), ts)
    assert held == (7, ("m", "1"))  # windows 0, 1000, 2000 are the warm-up: effective from 2000 + 3 windows
    assert effective_from(2000, SIZE) == 5000


def test_other_models_are_not_held_but_wait_behind_a_held_record():
    wait = waiting({("m", "1"): K})
    models = ["m", "other", "m", "m", "other", "m", "other"]
    ts = [0, 100, 1000, 2000, 4000, 5000, 5001]
    assert wait.first_held(fresh(), models, ["1"] * len(ts), ts) == (5, ("m", "1"))
    assert wait.first_held(fresh(), ["other"] * 3, ["1"] * 3, [9000, 9001, 9002]) is None


def test_a_model_with_a_reference_or_a_stored_one_is_never_held():
    wait = waiting({})
    assert wait.first_held(fresh(), ["m"] * 4, ["1"] * 4, [0, 1000, 2000, 9000]) is None


def test_windows_opened_in_earlier_batches_count_and_a_late_record_opens_the_current_window():
    wait = waiting({("m", "1"): K})
    assert wait.first_held(fresh(), ["m", "m"], ["1", "1"], [0, 3000]) is None
    # 100 is late against event time 3000 (its window closed at 1000 + 200): it opens the window of 3000
    assert wait.first_held(at(3000), ["m", "m"], ["1", "1"], [100, 3100]) is None
    assert wait.opened[("m", "1")] == [0, 3000]
    assert wait.first_held(at(3100), ["m", "m"], ["1", "1"], [4000, 7000]) == (1, ("m", "1"))


def test_the_hold_ends_when_the_reference_is_known_or_after_the_time_out():
    awaited = {("m", "1"): K}
    wait = waiting(awaited)
    held = wait.first_held(fresh(), ["m"] * 4, ["1"] * 4, [0, 1000, 2000, 5000])
    assert held is not None
    wait.hold = Hold(held[1], 5000, since=100.0)
    assert wait.due(150.0, timeout_s=60) == (False, False)
    assert wait.due(160.0, timeout_s=60) == (True, True)
    wait.release(timed_out=True)
    assert wait.hold is None and wait.first_held(fresh(), ["m"], ["1"], [9000]) is None  # given up here
    other = waiting(awaited)
    other.hold = Hold(("m", "1"), 5000, since=100.0)
    del awaited[("m", "1")]  # the reference arrived
    assert other.due(101.0, timeout_s=60) == (True, False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 12_000)), min_size=1, max_size=120))
def test_a_partition_never_waits_for_data_behind_its_hold_and_holds_at_the_merge_stages_window(records):
    """Records (partition, event time) spread over 4 partitions, each partition's in arrival order.

    The merge stage counts the windows opened on any partition (late records open the current one) and
    makes the reference effective K windows in plus REFERENCE_DELAY_WINDOWS. Every partition's hold point
    is at or after that (so the warm-up data is never behind a hold); a partition that opened every
    warm-up window, its records in event-time order, reads nothing of the windows the reference applies to.
    """
    opened: set[int] = set()
    holds: dict[int, int | None] = {}
    read: dict[int, tuple[list[int], list[int]]] = {}  # partition -> (its first K windows, starts read)
    for partition in range(4):
        ts = [t for p, t in records if p == partition]
        if not ts:
            continue
        windows: PartitionWindows[None] = PartitionWindows(partition, fixed_shape(SIZE, LATENESS), lambda *_: None)
        wait = waiting({("m", "1"): K})
        held = wait.first_held(fresh(), ["m"] * len(ts), ["1"] * len(ts), ts)
        cut = len(ts) if held is None else held[0]
        for i, t in enumerate(ts[:cut]):
            windows.assign("m", "1", t, i)
        opened |= {k[2] for k in windows.open}
        read[partition] = (sorted(k[2] for k in windows.open)[:K], [t - t % SIZE for t in ts[:cut]])
        holds[partition] = None if held is None else ts[cut] - ts[cut] % SIZE
        if held is not None:
            assert wait.opened[("m", "1")] == sorted(k[2] for k in windows.open)[:K]
    if len(opened) < K:
        assert all(h is None for h in holds.values())
        return
    merge_stage_effective = effective_from(sorted(opened)[K - 1], SIZE)
    for partition, hold in holds.items():
        if hold is not None:
            assert hold >= merge_stage_effective, partition
        first_windows, starts = read[partition]
        in_order = starts == sorted(starts)  # out of order, a later record can open an earlier warm-up window
        if in_order and first_windows == sorted(opened)[:K]:  # saw the whole warm-up: read nothing past it
            assert all(start < merge_stage_effective for start in starts), partition


def test_the_warm_up_count_travels_with_the_committed_offset():
    """A worker taking the partition over continues the count: it holds where the first owner would have."""
    awaited = {("m", "1"): K}
    first = waiting(awaited)
    assert first.first_held(fresh(), ["m", "m"], ["1", "1"], [0, 1000]) is None
    metadata = kafka_io.commit_metadata(1000, first.warm_up())
    tp = TopicPartition("t", 0, 5, metadata=metadata)
    assert kafka_io.restored_max_event_ms(tp) == 1000
    taker = PartitionReferenceWait(lambda m, v: awaited.get((m, v)), fixed_shape(SIZE, LATENESS),
                                   kafka_io.restored_warm_up(tp))
    assert taker.first_held(at(1000), ["m", "m", "m"], ["1"] * 3, [2000, 4999, 5000]) == (2, ("m", "1"))
    del awaited[("m", "1")]
    assert first.warm_up() == {}  # the reference is known: nothing left to carry


def test_too_many_models_warming_up_leave_the_warm_up_out_of_the_commit():
    crowd = {(f"model-{i}", "1"): [0, 60_000, 120_000] for i in range(200)}
    metadata = kafka_io.commit_metadata(7, crowd)
    assert len(metadata) <= kafka_io.MAX_COMMIT_METADATA
    tp = TopicPartition("t", 0, 5, metadata=metadata)
    assert kafka_io.restored_max_event_ms(tp) == 7 and kafka_io.restored_warm_up(tp) == {}
