"""Event-time windows per partition: lateness, closing, and replays that classify every record the same way."""

from __future__ import annotations

import numpy as np

from streams.windows import PartitionWindows


def new(size_ms: int = 1000, lateness_ms: int = 200) -> PartitionWindows[list[int]]:
    return PartitionWindows(0, size_ms, lateness_ms, lambda _m, _v, _s: [])


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
        replay = new()
        replay.max_event_ms = max_before
        closed_after = feed(replay, stream, start_offset=offset)
        # stage 2 keeps, per window, the emission with the smallest first offset (the complete one)
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
    replay = new()
    replay.max_event_ms = 5_000  # restored from the commit metadata
    _, late_again = replay.assign("m", "1", 500, 2)
    assert late_again
    forgetful = new()
    _, late_forgotten = forgetful.assign("m", "1", 500, 2)
    assert not late_forgotten
