"""The detector benchmark's scoring: delays, false alarms, misses, and the equal-false-alarm comparison."""

from __future__ import annotations

from load_tests.bench_detectors import WINDOW, Outcome, Row, _verdict, _window_outcome


def test_delay_counts_the_alarming_event_and_false_alarms_only_before_the_change() -> None:
    o = Outcome([10, 99, 100, 150], change=100, prefix=100)
    assert (o.false_alarms, o.delay) == (2, 1)
    assert Outcome([5], change=100, prefix=100).delay is None


def test_median_delay_counts_misses_as_infinitely_late() -> None:
    row = Row("m", [Outcome([109], 100, 100), Outcome([], 100, 100), Outcome([], 100, 100)])
    assert row.median_delay() is None and row.delays() == [10]
    row.outcomes.append(Outcome([100], 100, 100))
    row.outcomes.append(Outcome([119], 100, 100))
    assert row.median_delay() == 20.0  # 1, 10, 20, inf, inf
    assert Row("fa", [Outcome([1, 2, 300], 200, 200_000)]).fa_per_100k() == 1.0


def test_window_alarm_counts_at_the_window_end_and_prefix_is_the_whole_windows_before_the_change() -> None:
    change = 3 * WINDOW + 7
    o = _window_outcome([True, False, False, False, True], change, 1.0, 2)
    assert (o.false_alarms, o.prefix, o.delay) == (1, 3 * WINDOW, 2 * WINDOW - 7)


def test_verdict_compares_only_with_driftline_rows_at_an_equal_or_lower_false_alarm_rate() -> None:
    fast_noisy = Row("driftline tick 25, all streams, budget 0.001/event", [Outcome([5, 101], 100, 100)])
    slow_quiet = Row("driftline tick 25, all streams", [Outcome([149], 100, 100)])
    peer = Row("river ADWIN (delta 0.002)", [Outcome([139], 100, 100)])
    cells = _verdict("s", [slow_quiet, fast_noisy, peer]).split(" | ")
    assert cells[1:3] == ["all", "✗ 50 vs 40"]
    peer.outcomes = [Outcome([7, 139], 100, 100)]
    assert _verdict("s", [slow_quiet, fast_noisy, peer]).split(" | ")[2] == "✓ 2 vs 40"
