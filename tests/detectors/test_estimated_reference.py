"""The sequential false-alarm rate when the in-control mean is estimated from a reference (measured, not assumed)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from driftline.detectors.sequential import (
    Moments,
    TickChangeDetector,
    TickReference,
    TickStats,
    cusum_threshold,
    cusum_threshold_estimated,
)

STREAMS, TICKS, PER_TICK, REF_EVENTS = 600, 2500, 40, 2000  # a tick weighs 2 % of its reference: exact
RATE = 0.05  # expected false alarms per tick of the whole detector: 125 over the run


def run(with_counts: bool, seed: int = 0) -> int:
    """Alarms over TICKS stationary ticks of STREAMS streams, each against its own 2,000-event reference."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(0.0, 1.0, (STREAMS, REF_EVENTS))
    names = [f"x{i}" for i in range(STREAMS)]
    reference = TickReference({n: (float(m), float(s)) for n, m, s in zip(names, ref.mean(1), ref.std(1, ddof=1),
                                                                          strict=True)},
                              counts={n: float(REF_EVENTS) for n in names} if with_counts else {})
    detector = TickChangeDetector(reference, false_alarm_rate=RATE, k=1.0, warmup_ticks=0, min_count=PER_TICK)
    alarms = 0
    for _ in range(TICKS):
        means = rng.normal(0.0, 1.0 / np.sqrt(PER_TICK), STREAMS)
        alarms += len(detector.update(TickStats({n: Moments(PER_TICK, float(m)) for n, m in zip(names, means,
                                                                                                 strict=True)})))
    return alarms


def test_the_threshold_holds_the_rate_averaged_over_the_references_error():
    expected = RATE * TICKS
    observed = run(with_counts=True)
    # the streams' offsets differ, so the count is over-dispersed against a Poisson: allow 2x its 99 % interval
    low, high = stats.poisson.interval(0.99, expected)
    assert expected - 2 * (expected - low) <= observed <= expected + 2 * (high - expected), (observed, expected)
    # a threshold that takes the reference mean as exact alarms about twice as often as budgeted
    assert run(with_counts=False) > high


def test_the_estimated_threshold_is_the_exact_one_without_an_offset_and_grows_with_it():
    h = cusum_threshold(1e4, 1.0)
    assert cusum_threshold_estimated(1e4, 1.0, 0.0) == pytest.approx(h, abs=1e-6)
    grown = [cusum_threshold_estimated(1e4, 1.0, v) for v in (0.001, 0.01, 0.03)]
    assert h < grown[0] < grown[1] < grown[2]


def test_a_tick_weighs_at_most_the_reference_share():
    reference = TickReference({"x": (0.0, 1.0)}, counts={"x": 10_000.0})
    detector = TickChangeDetector(reference, warmup_ticks=0, min_count=30, reference_share=0.01)
    assert detector.cap.tolist() == [100.0]
    detector.update(TickStats({"x": Moments(2500, 0.1)}))  # a 0.1 sd shift seen in 2,500 events
    assert detector.cusum.s_up[0] == pytest.approx(0.1 * np.sqrt(100) - 1.0 if 0.1 * np.sqrt(100) > 1 else 0.0)
    with pytest.raises(ValueError, match="reference_share"):
        TickChangeDetector(reference, reference_share=0.0)


def test_a_stream_whose_pool_outweighs_its_reference_is_not_watched_and_h_stays_bounded():
    """The demo's case: a 1 % category in a 6,000-event reference needs pools of 1,011 events (17 % of it);
    its offset has no finite useful h, and solving for one stalled the merge stage for minutes."""
    reference = TickReference({"x": (0.0, 1.0)}, proportions={"plan=rare": 0.01, "plan=basic": 0.5},
                              counts={"x": 6000.0, "plan=rare": 6000.0, "plan=basic": 6000.0})
    detector = TickChangeDetector(reference, false_alarm_rate=1e-6)
    assert detector.unwatched == ["plan=rare"] and set(detector.names) == {"x", "plan=basic"}
    assert detector.h == pytest.approx(cusum_threshold_estimated(detector.arl0, 1.0, 0.02))
    with pytest.raises(ValueError, match="offset_var"):
        cusum_threshold_estimated(1e7, 1.0, 0.2)
