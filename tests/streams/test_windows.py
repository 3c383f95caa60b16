"""Event-time windows per partition: lateness, closing, and replays that classify every record the same way."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.streams.pipeline.windows import JUMP_MS, JUMP_RECORDS, PartitionWindows, WindowSpec, fixed_shape


def new(size_ms: int = 1000, lateness_ms: int = 200, jump_ms: int = JUMP_MS, jump_records: int = JUMP_RECORDS,
        start_ms: int | None = 0) -> PartitionWindows[list[int]]:
    """A partition whose event time is ``start_ms`` (as restored from a commit; None: a new partition)."""
    return PartitionWindows(0, fixed_shape(size_ms, lateness_ms), lambda _m, _v, _s: [], jump_ms, jump_records,
                            max_event_ms=start_ms)


def feed(windows: PartitionWindows[list[int]], stream: list[int], start_offset: int = 0) -> list[tuple]:
    """Feed event times; close windows after each record; return what closed, with contents and lateness."""
    closed = []
    for offset, ts in enumerate(stream[start_offset:], start=start_offset):
        window, late = windows.assign("m", "1", ts, offset)
        if not late:
            window.acc.append(ts)
        closed += [(c.key, tuple(c.acc), c.late_events, c.first_offset) for c in windows.close_ready()]
    return closed


def test_records_within_the_allowed_lateness_join_their_window():
    w = new()
    closed = feed(w, [100, 900, 1100, 950, 1250])
    assert closed == [(("m", "1", 0), (100, 900, 950), 0, 0)]


def test_a_record_after_its_window_closed_is_counted_late_in_the_open_window():
    w = new()
    closed = feed(w, [100, 1300, 50, 1400, 2300])
    assert closed == [(("m", "1", 0), (100,), 0, 0), (("m", "1", 1000), (1300, 1400), 1, 1)]
    assert w.open[("m", "1", 2000)].acc == [2300]


def test_commit_point_is_the_oldest_open_window_with_the_max_event_time_before_it():
    w = new()
    feed(w, [100, 1300, 1350, 2150])
    assert w.commit_point() == (1, 100)


def test_replay_from_the_commit_point_closes_the_same_windows_with_the_same_contents():
    rng = np.random.default_rng(3)
    stream = [int(t) for t in np.sort(rng.integers(0, 20_000, 400)) + rng.integers(-900, 900, 400)]
    stream = [max(0, t) for t in stream]
    full = feed(new(), stream)
    for crash_at in range(5, 400, 3):
        first = new()
        closed_before = feed(first, stream[:crash_at])
        offset, max_before = first.commit_point()
        replay = new(start_ms=max_before)
        closed_after = feed(replay, stream, start_offset=offset)
        # the merge stage keeps, per window, the emission with the smallest first offset (the complete one)
        kept: dict[tuple, tuple] = {}
        for key, contents, late, first in closed_before + closed_after:
            if key not in kept or first < kept[key][2]:
                kept[key] = (contents, late, first)
        assert {k: v[:2] for k, v in kept.items()} == {c[0]: (c[1], c[2]) for c in full}


def test_idle_advance_closes_windows_without_traffic():
    w = new()
    feed(w, [100, 300])
    assert list(w.close_ready()) == []
    w.advance_to(5_000)
    assert [c.key for c in w.close_ready()] == [("m", "1", 0)]


def test_an_idle_advance_is_committed_so_a_replay_judges_lateness_the_same():
    first = new()
    feed(first, [100, 300])
    first.advance_to(5_000)
    assert [c.key for c in first.close_ready()] == [("m", "1", 0)]
    assert first.commit_point() == (2, 5_000)
    window, late = first.assign("m", "1", 500, 2)
    assert late and window.key == ("m", "1", 5_000)
    replay = new(start_ms=5_000)  # restored from the commit metadata
    _, late_again = replay.assign("m", "1", 500, 2)
    assert late_again
    forgetful = new(start_ms=None)
    _, late_forgotten = forgetful.assign("m", "1", 500, 2)
    assert not late_forgotten


@settings(max_examples=600, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["1", "2"]),
                                           st.integers(0, 5000)), max_size=25), max_size=5),
       idle=st.one_of(st.none(), st.integers(0, 6000)), lateness=st.sampled_from([0, 300, 1500]),
       jump=st.tuples(st.sampled_from([0, 400, JUMP_MS]), st.sampled_from([1, 2, JUMP_RECORDS])))
def test_batch_routing_equals_routing_one_record_at_a_time(batches, idle, lateness, jump):
    """Also with two models of different window sizes and lateness sharing the partition's event time."""
    shapes = {("a", "1"): WindowSpec(1000, lateness), ("a", "2"): WindowSpec(1000, lateness),
              ("b", "1"): WindowSpec(700, 0), ("b", "2"): WindowSpec(2500, 900)}
    one = PartitionWindows(0, lambda m, v: shapes[m, v], lambda *_: [], *jump)
    many = PartitionWindows(0, lambda m, v: shapes[m, v], lambda *_: [], *jump)
    offset = 0
    for number, batch in enumerate(batches):
        if idle is not None and number == 1:
            one.advance_to(idle)
            many.advance_to(idle)
        offsets = list(range(offset, offset + len(batch)))
        offset += len(batch) + 2  # a gap, as dead letters leave
        for (model, version, ts), o in zip(batch, offsets, strict=True):
            window, late = one.assign(model, version, ts, o)
            if not late:
                window.acc.append(o)
        if batch:
            models, versions, stamps = map(list, zip(*batch, strict=True))
            for window, rows in many.assign_many(models, versions, stamps, offsets):
                window.acc.extend(offsets[r] for r in rows)
        assert state(many) == state(one)
        assert [(c.key, c.spec, c.acc, c.late_events, c.late_oldest_ms, c.first_offset, c.last_offset)
                for c in many.close_ready()] == [(c.key, c.spec, c.acc, c.late_events, c.late_oldest_ms,
                                                  c.first_offset, c.last_offset) for c in one.close_ready()]


def state(w: PartitionWindows) -> tuple:
    return (w.max_event_ms, w.next_offset, w.commit_point(), w.run, w.run_from if w.run else None,
            sorted((k, v.spec, v.first_offset, v.replay_from, v.last_offset, v.late_events,
                    v.late_oldest_ms, v.acc)
                   for k, v in w.open.items()))


def test_each_model_closes_on_its_own_size_and_lateness_against_the_shared_event_time():
    shapes = {"fast": WindowSpec(1000, 0), "slow": WindowSpec(5000, 2000)}
    w = PartitionWindows(0, lambda m, _v: shapes[m], lambda *_: [], max_event_ms=0)
    w.assign("slow", "1", 100, 0)
    w.assign("fast", "1", 200, 1)
    w.assign("fast", "1", 1500, 2)  # event time 1500: fast [0, 1000) closes, slow [0, 5000) needs 7000
    assert [(c.key, c.spec.size_ms) for c in w.close_ready()] == [(("fast", "1", 0), 1000)]
    _, late = w.assign("fast", "1", 900, 3)
    assert late
    _, late = w.assign("slow", "1", 900, 4)
    assert not late
    w.advance_to(7000)
    assert [(c.key, c.spec) for c in w.close_ready()] == [
        (("slow", "1", 0), WindowSpec(5000, 2000)), (("fast", "1", 1000), WindowSpec(1000, 0))]


def test_one_record_far_ahead_leaves_the_event_time_where_the_others_are():
    """A clock 50 minutes ahead (within the validation's skew) on one record: nothing after it is late."""
    w = new()
    ahead = 3_000_000
    closed = feed(w, [100, 900, 1300, ahead, 1400, 2100, 2500, 3300])
    assert w.event_time_ms == 3300
    assert [c[0] for c in closed] == [("m", "1", 0), ("m", "1", 1000), ("m", "1", 2000)]
    assert sum(c[2] for c in closed) == 0 and all(not v.late_events for v in w.open.values())
    assert w.open[("m", "1", ahead)].acc == [ahead]  # counted in its own window, which waits for event time
    assert w.commit_point() == (3, 1300)  # a crash re-reads it


def test_a_jump_confirmed_by_consecutive_records_moves_to_the_earliest_of_them():
    w = new()
    feed(w, [100, 900, 50_000, 60_000])
    assert w.event_time_ms == 900
    _, late = w.assign("m", "1", 55_000, 4)
    assert not late and w.event_time_ms == 50_000
    _, late = w.assign("m", "1", 950, 5)
    assert late  # the producer really moved on: a record of the old time is late now
    broken = new()
    feed(broken, [100, 50_000, 60_000, 1000, 70_000])  # an on-time record between ends the jump unconfirmed
    assert broken.event_time_ms == 1000


def test_a_new_partition_starts_at_the_earliest_of_its_first_records():
    w = new(start_ms=None)
    assert feed(w, [3_000_000, 100, 200]) == []
    assert w.event_time_ms == 100 and w.commit_point() == (0, None)
    _, late = w.assign("m", "1", 1100, 3)
    assert not late and w.event_time_ms == 1100


def test_a_jump_still_unconfirmed_when_an_idle_advance_closed_its_windows_is_committed_from_its_start():
    w = new(jump_records=2)
    feed(w, [100, 30_000])
    w.advance_to(40_000)
    assert [c.key for c in w.close_ready()] == [("m", "1", 0), ("m", "1", 30_000)]
    assert w.commit_point() == (1, 100)  # the next record far ahead confirms 30 000 together with it


steps = st.one_of(st.integers(-500, 700), st.just(20_000))  # mostly on time, sometimes the producer moves on
ahead = st.sampled_from([0, 0, 0, 0, 5_000, 3_000_000])  # now and then a clock that runs ahead


@settings(max_examples=300, deadline=None)
@given(records=st.lists(st.tuples(steps, ahead), min_size=1, max_size=40),
       jump=st.tuples(st.sampled_from([0, 400, JUMP_MS]), st.sampled_from([1, 2, JUMP_RECORDS])),
       start=st.sampled_from([None, 0]))
def test_a_replay_from_any_commit_point_routes_every_record_as_the_first_run_did(records, jump, start):
    """Crash after any record, replay from the commit point: the same windows close with the same contents,
    and the replay ends in the uninterrupted run's state (jumps confirmed or not across the crash)."""
    stream, now = [], 0
    for step, skew in records:
        now = max(0, now + step)
        stream.append(now + skew)
    full = new(1000, 200, *jump, start_ms=start)
    closed_full = feed(full, stream)
    for crash_at in range(1, len(stream) + 1):
        first = new(1000, 200, *jump, start_ms=start)
        closed_before = feed(first, stream[:crash_at])
        offset, before = first.commit_point()
        replay = new(1000, 200, *jump, start_ms=before)
        closed_after = feed(replay, stream, start_offset=offset)
        kept: dict[tuple, tuple] = {}
        for key, contents, late, first_offset in closed_before + closed_after:
            if key not in kept or first_offset < kept[key][2]:
                kept[key] = (contents, late, first_offset)
        assert {k: v[:2] for k, v in kept.items()} == {c[0]: (c[1], c[2]) for c in closed_full}
        assert state(replay)[2:] == state(full)[2:] and replay.event_time_ms == full.event_time_ms



def test_a_window_spec_refuses_a_size_or_lateness_it_cannot_close_by():
    for size_ms, lateness_ms, field_name in ((0, 0, "size_ms"), (-1000, 0, "size_ms"), (1000, -1, "lateness_ms")):
        with pytest.raises(ValueError, match=f"WindowSpec.{field_name} must be"):
            WindowSpec(size_ms, lateness_ms)
    assert WindowSpec(1, 0) == WindowSpec(1, 0)  # a zero lateness is allowed


def test_a_window_closes_exactly_when_event_time_reaches_its_end_plus_the_lateness():
    spec = WindowSpec(1000, 200)
    assert [spec.start_of(ts) for ts in (0, 999, 1000, 2500)] == [0, 0, 1000, 2000]
    assert not spec.closed_by(1000, 2199)
    assert spec.closed_by(1000, 2200)
    assert not spec.closed_by(1000, None)  # no event time yet: nothing closes


def test_partition_windows_close_on_the_spec_rule_at_its_boundary():
    w = new(size_ms=1000, lateness_ms=200)
    w.assign("m", "1", 500, 0)
    w.advance_to(1199)
    assert list(w.close_ready()) == []
    w.advance_to(1200)
    assert [c.key for c in w.close_ready()] == [("m", "1", 0)]
    _, late = w.assign("m", "1", 999, 1)  # its window closed: late
    assert late
