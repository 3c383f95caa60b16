"""The sequential benchmark's pure parts, without a broker: each generator changes what it says where it says,
and the river baseline finds a 1 sd shift."""

from __future__ import annotations

import numpy as np
import pytest

from load_tests.bench_sequential import model_id, monitoring_yaml
from load_tests.change_streams import BY_KEY, NUMERIC, SCENARIOS, SDS, SHIFTED, generate, river_baselines

N, CHANGE = 40_000, 20_000


def halves(values: np.ndarray) -> tuple[float, float]:
    return float(values[:CHANGE].mean()), float(values[CHANGE:].mean())


def test_a_mean_shift_moves_one_feature_by_its_size_from_the_change_on():
    for key, size in (("mean_0.5", 0.5), ("mean_1", 1.0)):
        stream = generate(BY_KEY[key], N, CHANGE, seed=1)
        for j in range(len(NUMERIC)):
            before, after = halves(stream.numeric[:, j])
            expected = size * SDS[j] if j == SHIFTED else 0.0
            assert after - before == pytest.approx(expected, abs=0.05 * SDS[j]), (key, NUMERIC[j])
        assert halves(stream.errors) == pytest.approx((0.1, 0.1), abs=0.01)


def test_the_other_scenarios_change_only_their_stream():
    categorical = generate(BY_KEY["categorical"], N, CHANGE, seed=2)
    assert halves(categorical.peer_values(BY_KEY["categorical"])) == pytest.approx((0.15, 0.23), abs=0.01)
    errors = generate(BY_KEY["error_rate"], N, CHANGE, seed=3)
    assert halves(errors.errors) == pytest.approx((0.10, 0.20), abs=0.01)
    sharp = generate(BY_KEY["overconfident"], N, CHANGE, seed=4)
    calm = generate(BY_KEY["overconfident"], N, N, seed=4)
    # same predicted labels and errors (same accuracy), scores further from 0.5
    assert np.array_equal(sharp.predicted, calm.predicted) and np.array_equal(sharp.errors, calm.errors)
    before, after = halves(np.abs(sharp.score - 0.5))
    assert after > before + 0.05
    for stream in (categorical, errors, sharp):
        assert halves(stream.numeric[:, SHIFTED]) == pytest.approx((0.35, 0.35), abs=0.01)


def test_no_change_before_the_change_index_whatever_the_scenario():
    calm = generate(SCENARIOS[0], N, N, seed=5)
    for scenario in SCENARIOS:
        stream = generate(scenario, N, CHANGE, seed=5)
        assert np.array_equal(stream.numeric[:CHANGE], calm.numeric[:CHANGE])
        assert np.array_equal(stream.score[:CHANGE], calm.score[:CHANGE])
        event = stream.event(CHANGE, "p", "m", 1)
        assert set(event["features"]) == {*NUMERIC, "plan", "new_customer"}
        assert set(event["segments"]) == {"region", "device"}
        assert event["prediction"]["probabilities"]["1"] == pytest.approx(event["prediction"]["score"])


def test_river_adwin_and_page_hinkley_find_a_1_sd_shift_soon_after_it():
    scenario = BY_KEY["mean_1"]
    stream = generate(scenario, N, CHANGE, seed=0)
    found = {p.method: p for p in river_baselines(stream.peer_values(scenario), CHANGE)}
    assert set(found) == {"river ADWIN", "river PageHinkley"}
    for peer in found.values():
        assert peer.delay_events is not None and 0 < peer.delay_events < 1000, peer
        assert peer.stationary_events == CHANGE and peer.false_alarms_per_100k < 50


def test_the_monitoring_file_switches_the_budget_off_for_the_twins_only():
    twin = model_id(BY_KEY["mean_1"], 1000, budgeted=False)
    assert twin == "seq-mean_1-1000-nobudget"
    text = monitoring_yaml([twin])
    assert "reference: {source: stored}" in text and f"{twin}:\n    false_alarm_budget: {{enabled: false}}" in text
    assert "models" not in monitoring_yaml([])


def test_an_alarm_on_a_stream_the_change_does_not_move_is_told_apart():
    assert BY_KEY["categorical"].moves("plan=pro") and not BY_KEY["categorical"].moves("planet")
    assert BY_KEY["mean_1"].moves(NUMERIC[SHIFTED]) and not BY_KEY["mean_1"].moves("income")
