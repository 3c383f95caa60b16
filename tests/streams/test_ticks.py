"""Ticks: the summarize stage's tick fold agrees with the window summaries the reference is read from."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from driftline.detectors.reference import ReferenceProfile
from driftline.detectors.sequential import (
    Moments,
    TickChangeDetector,
    TickReference,
    TickStats,
    hist_moments,
)
from driftline.detectors.summaries import WindowSummary
from driftline.streams.config.model_config import MonitoringConfig
from driftline.streams.pipeline.decode import Prediction, decode_prediction
from driftline.streams.pipeline.summarize import BuiltColumns, PredictionSummarizer
from driftline.streams.pipeline.ticks import TickSummarizer, TickSummary, merge_ticks, tick_spec_ms

CONFIG = MonitoringConfig()


def predictions(n: int, seed: int, plan_p: tuple[float, float, float] = (0.5, 0.3, 0.2)) -> list[Prediction]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tenure = float(rng.normal(24, 8))
        score = float(1 / (1 + np.exp(-(tenure - 24) / 8)))
        features: dict[str, object] = {"tenure": tenure, "spend": float(rng.lognormal(3, 0.5)),
                                       "plan": str(rng.choice(["basic", "plus", "pro"], p=plan_p)),
                                       "vip": bool(rng.random() < 0.3)}
        if i % 17 == 0:
            features["tenure"] = None  # missing values count nowhere
        out.append(decode_prediction(orjson.dumps({
            "schema_version": 1, "prediction_id": f"p{seed}-{i}", "model_id": "m", "model_version": "1",
            "ts": 1_767_225_600_000 + i, "features": features,
            "prediction": {"score": score, "label": "churn" if score > 0.5 else "stay"}})))
    return out


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    """A classifier's profile, fitted from a reference window summary as `driftline reference set` does."""
    preds = predictions(4000, seed=1)
    numeric = {"tenure": np.array([np.nan if p.features["tenure"] is None else p.features["tenure"] for p in preds]),
               "spend": np.array([p.features["spend"] for p in preds])}
    categorical = {"plan": [p.features["plan"] for p in preds],
                   "vip": ["true" if p.features["vip"] else "false" for p in preds]}
    return ReferenceProfile.fit(numeric, categorical, classes=("churn", "stay"), task="classification")


def folded(profile: ReferenceProfile, preds: list[Prediction]) -> tuple[TickSummary, WindowSummary]:
    ticks = TickSummarizer(lambda *_: profile, CONFIG.resolve)
    windows = PredictionSummarizer(lambda *_: profile, CONFIG.resolve)
    tick, window = ticks.new("m", "1", 0), windows.new("m", "1", 0)
    ticks.add(tick, preds[: len(preds) // 2])
    ticks.add(tick, preds[len(preds) // 2:])
    windows.add(window, preds)
    return tick, window


def test_a_tick_reads_as_the_window_summary_of_the_same_events(profile: ReferenceProfile):
    tick, window = folded(profile, predictions(1500, seed=2))
    from_tick, from_window = tick.stats(), TickStats.from_summary(window)
    assert set(from_tick.numeric) == set(from_window.numeric) == {"tenure", "spend"}
    for name in from_window.numeric:
        assert from_tick.numeric[name].count == from_window.numeric[name].count
        assert from_tick.numeric[name].mean == pytest.approx(from_window.numeric[name].mean, rel=1e-12)
    # the score is binned as the reference's is, so the two means agree exactly
    assert window.classifier is not None
    assert tick.score_hist == window.classifier.score_hist.tolist()
    assert from_tick.score == pytest.approx(from_window.score, rel=1e-12)
    assert from_tick.score.mean == pytest.approx(hist_moments(window.classifier.score_hist)[1])
    assert from_tick.proportions.keys() == from_window.proportions.keys()
    for name, moments in from_window.proportions.items():
        assert from_tick.proportions[name] == pytest.approx(moments, rel=1e-12)
    assert from_tick.proportions["vip=true"].count == 1500


def test_ticks_fed_from_their_windows_columns_equal_ticks_that_build_their_own(profile: ReferenceProfile):
    """The summarize stage hands each tick the columns its window built (`BuiltColumns`): for a tick holding all
    of a window's records, a subset of them, or records of no window built this batch, the tick is the one
    built from the predictions alone."""
    preds = predictions(1000, seed=4)
    windows, ticks = PredictionSummarizer(lambda *_: profile, CONFIG.resolve), TickSummarizer(lambda *_: profile,
                                                                                              CONFIG.resolve)
    rows = np.arange(100, 900)  # the window's records: batch positions 100..899
    columns = windows.add(windows.new("m", "1", 0), [preds[i] for i in rows], rows)
    assert columns is not None
    built = BuiltColumns(len(preds))
    other = windows.add(windows.new("m", "2", 0), [preds[i] for i in range(900, 950)], np.arange(900, 950))
    assert other is not None
    built.add(columns)
    built.add(other)  # another window's records: 900..949
    for tick_rows in (rows, rows[::3], np.arange(100, 101), np.arange(850, 900), np.arange(50, 150),
                      np.arange(890, 910), np.arange(900, 950), np.arange(960, 970)):
        given = built.for_rows(tick_rows)
        # 50..149 and 890..909 are not all in one window, 960..969 in none
        assert (given is None) == (tick_rows[0] < 100 or tick_rows[0] in (890, 960))
        fed, own = ticks.new("m", "1", 0), ticks.new("m", "1", 0)
        ticks.add(fed, [preds[i] for i in tick_rows], given)
        ticks.add(own, [preds[i] for i in tick_rows])
        assert fed == own


def test_ticks_merge_and_travel_exactly(profile: ReferenceProfile):
    preds = predictions(900, seed=3)
    whole, _ = folded(profile, preds)
    a, _ = folded(profile, preds[:400])
    b, _ = folded(profile, preds[400:])
    merged, left_out = merge_ticks([a.to_bytes(), b.to_bytes()])
    assert left_out == 0 and merged is not None
    assert merged.n == whole.n == 900
    assert merged.score_hist == whole.score_hist and merged.categorical == whole.categorical
    for name, (count, total) in whole.numeric.items():
        assert merged.numeric[name][0] == count and merged.numeric[name][1] == pytest.approx(total, rel=1e-12)
    other = TickSummary.from_bytes(a.to_bytes())
    other.profile_hash = "another-profile"
    kept, left_out = merge_ticks([a.to_bytes(), b.to_bytes(), other.to_bytes()])
    assert kept is not None and kept.n == 900 and left_out == 400


def test_a_malformed_tick_body_is_a_value_error(profile: ReferenceProfile):
    tick, _ = folded(profile, predictions(10, seed=4))
    body = orjson.loads(tick.to_bytes())
    body["categorical"]["plan"] = [1, 2]
    with pytest.raises(ValueError, match="do not fit"):
        TickSummary.from_bytes(orjson.dumps(body))
    with pytest.raises(ValueError):
        TickSummary.from_bytes(b"[1, 2]")


def test_discovery_and_disabled_models_have_no_ticks(profile: ReferenceProfile):
    assert not TickSummarizer().new("m", "1", 0).active
    off = MonitoringConfig.from_dict({"defaults": {"detectors": {"sequential": {"enabled": False}}}})
    assert not TickSummarizer(lambda *_: profile, off.resolve).new("m", "1", 0).active


def test_the_tick_lateness_is_at_most_the_windows():
    config = MonitoringConfig.from_dict({"defaults": {"tick_seconds": 2, "tick_lateness_seconds": 3.0,
                                                      "allowed_lateness_seconds": 1.5}})
    assert tick_spec_ms(config.resolve("m", "1")) == (2000, 1500)
    assert tick_spec_ms(MonitoringConfig.from_dict({"defaults": {"allowed_lateness_seconds": 10}}).resolve("m", "1")) \
        == (5000, 2000)


def test_the_reference_watches_the_frequent_categories_and_one_side_of_a_boolean(profile: ReferenceProfile):
    _, window = folded(profile, predictions(4000, seed=5))
    ref = TickReference.from_summary(window)
    assert set(ref.proportions) == {"plan=basic", "plan=plus", "plan=pro", "vip=false"} or \
        set(ref.proportions) == {"plan=basic", "plan=plus", "plan=pro", "vip=true"}
    assert ref.proportions["plan=basic"] == pytest.approx(0.5, abs=0.03)
    assert ref.is_bernoulli("plan=pro") and not ref.is_bernoulli("tenure")
    assert TickReference.from_dict(ref.to_dict()) == ref


def test_a_category_frequency_shift_is_alarmed_on_its_stream(profile: ReferenceProfile):
    _, window = folded(profile, predictions(4000, seed=6))
    detector = TickChangeDetector(TickReference.from_summary(window), false_alarm_rate=1e-6, warmup_ticks=0)
    alarms = []
    for tick in range(40):
        shifted = (0.3, 0.4, 0.3) if tick >= 20 else (0.5, 0.3, 0.2)
        t, _ = folded(profile, predictions(250, seed=100 + tick, plan_p=shifted))
        found = detector.update(t.stats())
        alarms += [(tick, f.feature) for f in found]
    assert alarms and all(tick >= 20 for tick, _ in alarms), alarms
    assert {stream for _, stream in alarms} <= {"plan=basic", "plan=plus", "plan=pro"}
    assert min(tick for tick, _ in alarms) <= 25


def test_bernoulli_streams_pool_until_their_skew_is_small():
    ref = TickReference({}, proportions={"c=rare": 0.02})
    detector = TickChangeDetector(ref, warmup_ticks=0, min_count=30)
    assert detector.need.tolist() == [511.0]  # 10 / (0.02 * 0.98)
    assert detector.update(TickStats(proportions={"c=rare": Moments(500, 0.02)})) == []
    assert detector.pool_n.tolist() == [500.0]
