"""`FalseAlarmBudget`: the arithmetic of one budget per model in time, and its validation."""

from __future__ import annotations

import math

import pytest

from driftline.detectors.budget import FalseAlarmBudget


def test_defaults_are_one_false_alarm_per_model_per_30_days_half_of_it_sequential():
    b = FalseAlarmBudget()
    assert (b.alarms, b.days, b.sequential_share) == (1.0, 30.0, 0.5)
    assert b.per_second() == pytest.approx(1 / (30 * 86_400), rel=1e-15)


def test_tick_and_window_levels_add_up_to_the_rate_in_time():
    b = FalseAlarmBudget(alarms=3.0, days=7.0, sequential_share=0.3)
    day = 86_400
    # Over one day: every tick of 5 s plus every family of every 60 s window spends exactly the day's budget.
    ticks = day / 5 * b.per_tick(5)
    windows = day / 60 * 9 * b.per_window(60, families=9)
    assert ticks == pytest.approx(0.3 * 3 / 7, rel=1e-12)
    assert windows == pytest.approx(0.7 * 3 / 7, rel=1e-12)
    assert ticks + windows == pytest.approx(3 / 7, rel=1e-12)


def test_per_window_is_bonferroni_across_families_and_linear_in_the_window():
    b = FalseAlarmBudget()
    assert b.per_window(60, 1) == pytest.approx(10 * b.per_window(60, 10), rel=1e-15)
    assert b.per_window(300, 4) == pytest.approx(5 * b.per_window(60, 4), rel=1e-15)
    assert b.per_window(60, 9) == pytest.approx(0.5 / (30 * 86_400) * 60 / 9, rel=1e-15)


def test_the_shares_go_all_one_way_at_the_ends():
    assert FalseAlarmBudget(sequential_share=1.0).per_window(60, 3) == 0.0
    assert FalseAlarmBudget(sequential_share=0.0).per_tick(5) == 0.0
    assert FalseAlarmBudget(sequential_share=0.0).per_window(60, 1) == pytest.approx(60 / (30 * 86_400))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"alarms": 0}, "alarms"), ({"alarms": -1.0}, "alarms"), ({"alarms": math.inf}, "alarms"),
    ({"alarms": math.nan}, "alarms"), ({"days": 0.0}, "days"), ({"days": math.inf}, "days"),
    ({"sequential_share": -0.01}, "sequential_share"), ({"sequential_share": 1.5}, "sequential_share"),
    ({"sequential_share": math.nan}, "sequential_share"),
])
def test_bad_values_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field} must"):
        FalseAlarmBudget(**kwargs)


def test_bad_arguments_are_refused():
    b = FalseAlarmBudget()
    with pytest.raises(ValueError, match="tick_seconds"):
        b.per_tick(0)
    with pytest.raises(ValueError, match="window_seconds"):
        b.per_window(-1, 3)
    with pytest.raises(ValueError, match="families"):
        b.per_window(60, 0)


def test_it_is_frozen():
    with pytest.raises(AttributeError):
        FalseAlarmBudget().alarms = 2.0  # type: ignore[misc]
