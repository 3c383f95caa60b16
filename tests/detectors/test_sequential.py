"""Sequential tick detectors: exact ARL vs simulation, Page-Hinkley and river wrappers vs river, budget, delay."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from river import drift

from driftline.detectors.findings import Detector
from driftline.detectors.sequential import (
    CUSUM,
    ADWINTicks,
    DDMTicks,
    EDDMTicks,
    HDDMATicks,
    HDDMWTicks,
    Moments,
    PageHinkley,
    TickChangeDetector,
    TickReference,
    TickStats,
    cusum_arl,
    cusum_threshold,
    siegmund_arl,
    spread_errors,
)


def measured_arl0(chart: CUSUM | PageHinkley, ticks: int, seed: int) -> tuple[float, int]:
    """Updates per alarm over `chart.n_streams` in-control N(0, 1) streams; every stream restarts on alarm."""
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(ticks):
        chart.update(rng.standard_normal(chart.n_streams))
        alarms += int(chart.alarms.sum())
    return chart.n_streams * ticks / alarms, alarms


# --- ARL0 computation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "h"), [(0.0, 4.0), (0.25, 20.0), (0.5, 15.0), (1.0, 9.0), (2.0, 4.0), (3.0, 2.0)])
def test_cusum_arl_quadrature_has_converged(k: float, h: float) -> None:
    assert cusum_arl(k, h) == pytest.approx(cusum_arl(k, h, nodes=4 * (32 + 8 * math.ceil(h))), rel=1e-5)


def test_cusum_arl_known_values() -> None:
    # k = 0: L+ = Siegmund's b^2 is exact in the Brownian limit; one-sided L(0) with h = 0 is 1 / P(z > k).
    assert cusum_arl(3.0, 0.0, two_sided=False) == pytest.approx(1 / (1 - 0.9986501019683699), rel=1e-9)
    assert cusum_arl(0.0, 10.0, two_sided=False) == pytest.approx(siegmund_arl(0.0, 10.0, two_sided=False), rel=1e-3)
    assert cusum_arl(0.5, 4.0, two_sided=False) == pytest.approx(2 * cusum_arl(0.5, 4.0))


@pytest.mark.parametrize(("arl0", "k"), [(500, 0.5), (2e4, 1.0), (2.1e5, 1.0), (1e7, 0.25), (1e6, 2.0)])
def test_cusum_threshold_inverts_both_arls(arl0: float, k: float) -> None:
    h = cusum_threshold(arl0, k)
    assert cusum_arl(k, h) == pytest.approx(arl0, rel=1e-8)
    hs = cusum_threshold(arl0, k, method="siegmund")
    assert siegmund_arl(k, hs) == pytest.approx(arl0, rel=1e-8)


@pytest.mark.parametrize(
    ("k", "low", "high"), [(0.25, 1.0, 1.01), (0.5, 1.0, 1.01), (1.0, 1.05, 1.08), (2.0, 1.2, 1.7)]
)
def test_siegmund_overstates_the_arl_as_documented(k: float, low: float, high: float) -> None:
    for arl0 in (1e3, 1e4, 1e5, 1e6):
        assert low <= siegmund_arl(k, cusum_threshold(arl0, k)) / arl0 <= high


def test_cusum_threshold_is_zero_when_no_threshold_is_needed() -> None:
    assert cusum_threshold(100, k=3.0) == 0.0  # P(|z| > 3) = 1/370 already
    with pytest.raises(ValueError, match="arl0"):
        cusum_threshold(1.0)
    with pytest.raises(ValueError, match="method"):
        cusum_threshold(100, method="guess")


@pytest.mark.parametrize("k", [0.5, 1.0, 2.0])
def test_measured_arl0_is_at_least_the_target(k: float) -> None:
    target = 500.0
    chart = CUSUM(k, cusum_threshold(target, k), n_streams=10_000)
    arl, alarms = measured_arl0(chart, ticks=1000, seed=int(10 * k))
    se = arl / math.sqrt(alarms)
    assert arl >= target - 3 * se
    assert arl <= 1.03 * target + 3 * se  # not needlessly conservative either


def test_siegmund_threshold_alarms_more_often_than_asked_at_k_1() -> None:
    """Why cusum_threshold defaults to the exact ARL: Siegmund's h falls ~5 % short at k = 1."""
    target, k = 500.0, 1.0
    assert 1.0 < siegmund_arl(k, cusum_threshold(target, k)) / target < 1.07
    arl, alarms = measured_arl0(CUSUM(k, cusum_threshold(target, k, "siegmund"), 10_000), 1000, seed=3)
    assert arl < target - 2 * arl / math.sqrt(alarms)


def test_page_hinkley_with_the_cusum_threshold_is_at_least_as_conservative() -> None:
    target, k = 300.0, 1.0
    chart = PageHinkley(1, k, cusum_threshold(target, k), 1.0, "both", n_streams=10_000)
    arl, alarms = measured_arl0(chart, ticks=600, seed=5)
    assert arl >= target - 3 * arl / math.sqrt(alarms)


# --- CUSUM and Page-Hinkley against independent scalar implementations ---------------------------------


def scalar_cusum(z: list[float], k: float, h: float) -> list[tuple[int, int, int]]:
    """Textbook two-sided CUSUM, restart after alarm: (index, direction, start of the run) per alarm."""
    up = down = 0.0
    start_up = start_down = 0
    out = []
    for i, x in enumerate(z):
        if math.isnan(x):
            continue
        if up == 0 and up + x - k > 0:
            start_up = i
        if down == 0 and down - x - k > 0:
            start_down = i
        up, down = max(0.0, up + x - k), max(0.0, down - x - k)
        if up > h and up >= down:
            out.append((i, 1, start_up))
            up = down = 0.0
        elif down > h:
            out.append((i, -1, start_down))
            up = down = 0.0
    return out


def test_cusum_matches_scalar_recursion_stream_by_stream() -> None:
    rng = np.random.default_rng(11)
    z = rng.standard_normal((400, 6)) + np.where(np.arange(400)[:, None] > 200, [0.8, -0.8, 0, 1.5, 0, 0], 0)
    z[rng.random(z.shape) < 0.1] = np.nan
    chart = CUSUM(0.5, 4.0, n_streams=6)
    got: list[list[tuple[int, int, int]]] = [[] for _ in range(6)]
    for i, row in enumerate(z):
        chart.update(row)
        for s in np.flatnonzero(chart.alarms):
            got[s].append((i, int(chart.direction[s]), int(chart.change_point[s])))
    for s in range(6):
        assert got[s] == scalar_cusum(z[:, s].tolist(), 0.5, 4.0)
    assert sum(map(len, got)) > 6


def run_river_ph(xs: list[float], **params: float | str) -> list[int]:
    ph = drift.PageHinkley(**params)
    hits = []
    for i, x in enumerate(xs):
        ph.update(x)
        if ph.drift_detected:
            hits.append(i)
    return hits


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"min_instances": 1, "delta": 1.0, "threshold": 5.7, "alpha": 1.0},
        {"min_instances": 10, "delta": 0.1, "threshold": 8.0, "mode": "up"},
        {"min_instances": 5, "delta": 0.5, "threshold": 4.0, "alpha": 0.99, "mode": "down"},
    ],
)
def test_page_hinkley_detects_exactly_where_river_does(params: dict[str, float | str]) -> None:
    rng = np.random.default_rng(7)
    n, streams = 3000, 8
    shift = np.where(np.arange(n)[:, None] >= 1500, np.linspace(-1.5, 1.5, streams), 0.0)
    x = rng.standard_normal((n, streams)) + shift
    ph = PageHinkley(n_streams=streams, **params)  # type: ignore[arg-type]
    got: list[list[int]] = [[] for _ in range(streams)]
    for i, row in enumerate(x):
        ph.update(row)
        for s in np.flatnonzero(ph.alarms):
            got[s].append(i)
    expected = [run_river_ph(x[:, s].tolist(), **params) for s in range(streams)]
    assert got == expected
    assert sum(map(len, expected)) >= 4


def test_page_hinkley_skips_missing_values_as_if_absent() -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal(2000) + np.where(np.arange(2000) > 1000, 1.0, 0.0)
    missing = rng.random(2000) < 0.2
    ph = PageHinkley(min_instances=5, delta=0.2, threshold=10.0)
    got = [i for i, v in enumerate(np.where(missing, np.nan, x)) if ph.update([v])]
    kept = np.flatnonzero(~missing)
    expected = run_river_ph(x[kept].tolist(), min_instances=5, delta=0.2, threshold=10.0)
    assert got == kept[expected].tolist() and got


# --- river wrappers ------------------------------------------------------------------------------------


@given(st.integers(0, 500), st.data())
def test_spread_errors_keeps_the_count_and_a_constant_rate(labeled: int, data: st.DataObject) -> None:
    errors = data.draw(st.integers(0, labeled))
    seq = spread_errors(labeled, errors)
    assert seq.size == labeled and set(seq.tolist()) <= {0, 1}
    prefix = np.cumsum(seq)
    m = np.arange(1, labeled + 1)
    assert np.array_equal(prefix, m * errors // max(labeled, 1))  # every prefix holds its share of errors


def error_ticks(seed: int, ticks: int = 300) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    labeled = rng.integers(0, 80, ticks)
    rate = np.where(np.arange(ticks) < ticks // 2, 0.1, 0.3)
    return list(zip(labeled.tolist(), rng.binomial(labeled, rate).tolist(), strict=True))


@pytest.mark.parametrize(
    ("wrapper", "river_class"),
    [
        (ADWINTicks, drift.ADWIN),
        (DDMTicks, drift.binary.DDM),
        (EDDMTicks, drift.binary.EDDM),
        (HDDMATicks, drift.binary.HDDMA),
        (HDDMWTicks, drift.binary.HDDMW),
    ],
)
def test_wrappers_detect_where_river_fed_the_same_sequence_does(wrapper: type, river_class: type) -> None:
    ticks = error_ticks(seed=1)
    det = wrapper()
    got: list[int] = []
    for i, (labeled, errors) in enumerate(ticks):
        if i == 100:  # a checkpoint round trip mid-stream changes nothing
            det = wrapper.from_state(json.loads(json.dumps(det.state_dict())))
        det.update_errors(labeled, errors)
        got += det.detections
    reference = river_class()
    sequence = [x for labeled, errors in ticks for x in spread_errors(labeled, errors).tolist()]
    expected = []
    for i, x in enumerate(sequence):
        reference.update(x)
        if reference.drift_detected:
            expected.append(i)
    assert got == expected and expected
    assert det.n_fed == len(sequence)


def test_adwin_wrapper_on_tick_statistics_matches_river() -> None:
    rng = np.random.default_rng(2)
    z = rng.standard_normal(600) + np.where(np.arange(600) >= 300, 1.0, 0.0)
    det, reference = ADWINTicks(delta=0.01), drift.ADWIN(delta=0.01)
    got, expected = [], []
    for i, v in enumerate(z.tolist()):
        if det.update(v):
            got.append(i)
            assert det.change_points == [i - int(det.detector.width) + 1]
        reference.update(v)
        if reference.drift_detected:
            expected.append(i)
    assert got == expected and expected


# --- TickChangeDetector --------------------------------------------------------------------------------


def tick_moments(x: np.ndarray, tick: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-tick count and mean of events x[event, feature] in ticks of `tick` events."""
    t = x.shape[0] // tick
    return np.full((t, x.shape[1]), float(tick)), x[: t * tick].reshape(t, tick, x.shape[1]).mean(axis=1)


def feed(det: TickChangeDetector, names: list[str], count: np.ndarray, mean: np.ndarray) -> list[list]:
    out = []
    for c, m in zip(count.tolist(), mean.tolist(), strict=True):
        tick = TickStats({n: Moments(ci, mi) for n, ci, mi in zip(names, c, m, strict=True)})
        out.append(det.update(tick))
    return out


def test_false_alarms_per_tick_stay_within_the_budget_on_two_million_events() -> None:
    d, tick, rate, seeds, events = 20, 100, 0.01, 5, 400_000
    names = [f"f{i}" for i in range(d)]
    ref = TickReference({n: (0.0, 1.0) for n in names})
    alarms = ticks = 0
    for seed in range(seeds):
        x = np.random.default_rng(100 + seed).standard_normal((events, d))
        det = TickChangeDetector(ref, false_alarm_rate=rate, warmup_ticks=1)
        found = feed(det, names, *tick_moments(x, tick))
        alarms += sum(len(f) for f in found)
        ticks += len(found) - det.warmup_ticks
    expected = rate * ticks  # 200 over 20,000 ticks, Poisson sd ~14
    assert alarms <= expected + 3 * math.sqrt(expected)
    assert alarms >= 0.6 * expected  # the budget is used, not wasted: Bonferroni over 20 rare alarms is tight


def adwin_delay(x: np.ndarray, t0: int) -> tuple[int, int]:
    adwin, false_alarms = drift.ADWIN(), 0
    for i, v in enumerate(x.tolist()):
        adwin.update(v)
        if adwin.drift_detected:
            if i >= t0:
                return i - t0 + 1, false_alarms
            false_alarms += 1
    raise AssertionError("ADWIN missed the shift")


def test_half_sigma_shift_is_caught_no_later_than_adwin_in_events() -> None:
    d, tick, events, seeds = 20, 20, 20_000, 20
    names = [f"f{i}" for i in range(d)]
    ref = TickReference({n: (0.0, 1.0) for n in names})
    ours, theirs, false_alarms = [], [], 0
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        t0 = int(rng.integers(9000, 11000))
        x = rng.standard_normal((events, d))
        x[t0:, 0] += 0.5
        # defaults (1e-4 false alarms per tick for all 20 features, k = 1), but no pooling of 20-event ticks
        det = TickChangeDetector(ref, min_count=tick)
        found = feed(det, names, *tick_moments(x, tick))
        hits = [t for t, f in enumerate(found) for a in f if a.feature == "f0" and (t + 1) * tick > t0]
        false_alarms += sum(len(f) for t, f in enumerate(found) if (t + 1) * tick <= t0)
        ours.append((hits[0] + 1) * tick - t0)
        delay, adwin_false = adwin_delay(x[:, 0], t0)
        theirs.append(delay)
        false_alarms += adwin_false
    assert np.median(ours) <= np.median(theirs), (sorted(ours), sorted(theirs))
    assert np.mean(np.less_equal(ours, theirs)) >= 0.6  # faster on most seeds, not by luck of the median
    assert false_alarms <= 2


def test_change_point_direction_warmup_and_detail() -> None:
    ref = TickReference({"a": (10.0, 2.0), "b": (0.0, 1.0)}, score=(0.5, 0.1))
    det = TickChangeDetector(ref, false_alarm_rate=1e-3, k=1.0, warmup_ticks=3)
    assert det.arl0 == 3 / 1e-3
    rng = np.random.default_rng(4)
    findings = []
    for t in range(40):
        a = rng.normal(10.0 - (1.0 if t >= 20 else 0.0), 2.0, 50).mean()
        score = rng.normal(0.5, 0.1, 50).mean() + (1.0 if t < 3 else 0.0)  # wild, but inside the warm-up
        findings.append(det.update(TickStats({"a": Moments(50, a), "b": Moments(50, 0.0)}, Moments(50, score))))
    assert findings[:3] == [[], [], []]
    first = next(f for fs in findings for f in fs)
    assert (first.metric, first.feature, first.breached, first.threshold) == ("cusum", "a", True, det.h)
    assert first.detail["direction"] == "down" and first.detail["change_tick"] == 20
    assert first.detail["tick"] in (20, 21)
    assert all(f.feature == "a" for fs in findings for f in fs)


def test_pooling_until_enough_events_and_error_rate_statistic() -> None:
    ref = TickReference({"x": (0.0, 1.0)}, error_rate=0.1)
    det = TickChangeDetector(ref, false_alarm_rate=1e-3, warmup_ticks=0, min_count=30)
    assert det.need.tolist() == [30, math.ceil(10 / 0.09)]
    z, start = det._pooled_z(TickStats({"x": Moments(20, 0.5)}, labeled=60, errors=12))
    assert np.isnan(z).all()
    det.tick = 1
    z, start = det._pooled_z(TickStats({"x": Moments(20, -0.1)}, labeled=60, errors=9))
    assert z[0] == pytest.approx((20 * 0.5 + 20 * -0.1) / 40 / (1 / math.sqrt(40)))
    assert z[1] == pytest.approx((21 / 120 - 0.1) / math.sqrt(0.09 / 120))
    assert start.tolist() == [0, 0]
    assert det.pool_n.tolist() == [0.0, 0.0]


def test_state_round_trip_mid_stream_gives_identical_findings_for_every_method() -> None:
    ref = TickReference({"x": (0.0, 1.0), "y": (5.0, 2.0)}, score=(0.3, 0.2), error_rate=0.2)
    methods = ("cusum", "page_hinkley", "adwin", "ddm", "eddm", "hddm_a", "hddm_w")
    rng = np.random.default_rng(9)
    ticks = []
    for t in range(300):
        shift = 0.6 if t >= 150 else 0.0
        labeled = int(rng.integers(20, 60))
        ticks.append(
            TickStats(
                {"x": Moments(40, rng.normal(shift, 1, 40).mean()), "y": Moments(40, rng.normal(5, 2, 40).mean())},
                Moments(40, rng.normal(0.3, 0.2, 40).mean()),
                labeled,
                int(rng.binomial(labeled, 0.2 + shift / 2)),
            )
        )
    a = TickChangeDetector(ref, false_alarm_rate=1e-3, methods=methods)
    b = TickChangeDetector(ref, false_alarm_rate=1e-3, methods=methods)
    out_a, out_b = [], []
    for t, tick in enumerate(ticks):
        if t == 170:
            b = TickChangeDetector.from_state(json.loads(json.dumps(b.state_dict())))
        out_a.append(a.update(tick))
        out_b.append(b.update(tick))
    assert out_a == out_b
    assert isinstance(a, Detector)
    after = {(f.metric, f.feature) for fs in out_a[150:] for f in fs}
    assert {("cusum", "x"), ("cusum", "error_rate"), ("page_hinkley", "x"), ("adwin", "x")} <= after
    assert {("ddm", "error_rate"), ("hddm_a", "error_rate")} <= after
    assert a.arl0 == 2 * 4 / 1e-3  # two budgeted methods x four streams


def test_invalid_configuration_is_rejected() -> None:
    ref = TickReference({"x": (0.0, 1.0)})
    with pytest.raises(ValueError, match="false_alarm_rate"):
        TickChangeDetector(ref, false_alarm_rate=0.0)
    with pytest.raises(ValueError, match="unknown methods"):
        TickChangeDetector(ref, methods=("kswin",))
    with pytest.raises(ValueError, match="positive sd"):
        TickChangeDetector(TickReference({"x": (0.0, 0.0)}))
    with pytest.raises(ValueError, match="may not be named"):
        TickChangeDetector(TickReference({"score": (0.0, 1.0)}, score=(0.5, 0.1)))


# --- WindowSummary integration -------------------------------------------------------------------------


def classifier_batch(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict:
    x = rng.normal(3.0 + shift, 2.0, n)
    score = 1 / (1 + np.exp(-(x - 3.0)))
    labels = np.where(rng.random(n) < score, "yes", "no")
    return {"x": x, "score": score, "labels": labels}


def test_reference_and_ticks_read_from_window_summaries_match_raw_data() -> None:
    from driftline.detectors.summaries import ReferenceProfile, WindowSummary

    rng = np.random.default_rng(12)
    ref_data = classifier_batch(rng, 20_000)
    profile = ReferenceProfile.fit({"x": ref_data["x"]}, classes=("no", "yes"))
    ref_summary = WindowSummary.of(profile, {"x": ref_data["x"]}, scores=ref_data["score"])
    predicted = np.where(ref_data["score"] >= 0.5, "yes", "no")
    ref_summary.add_labels(labels=ref_data["labels"].tolist(), scores=ref_data["score"])
    ref = TickReference.from_summary(ref_summary)
    assert ref.numeric["x"][0] == pytest.approx(ref_data["x"].mean(), rel=1e-12)
    assert ref.numeric["x"][1] == pytest.approx(ref_data["x"].std(ddof=1), rel=1e-9)
    binned = (np.minimum(np.floor(ref_data["score"] * 100), 99) + 0.5) / 100  # the score the summary keeps
    assert ref.score == pytest.approx((binned.mean(), binned.std(ddof=1)), rel=1e-9)
    assert ref.error_rate == pytest.approx(np.mean(predicted != ref_data["labels"]))
    assert abs(ref.score[0] - ref_data["score"].mean()) <= 0.005  # binning moves the mean by <= half a bin

    tick_data = classifier_batch(rng, 150)
    tick_summary = WindowSummary.of(profile, {"x": tick_data["x"]}, scores=tick_data["score"])
    tick_summary.add_labels(labels=tick_data["labels"][:60].tolist(), scores=tick_data["score"][:60])
    tick = TickStats.from_summary(tick_summary)
    assert tick.numeric["x"] == pytest.approx((150, tick_data["x"].mean()))
    binned = (np.minimum(np.floor(tick_data["score"] * 100), 99) + 0.5) / 100
    assert tick.score == pytest.approx((150, binned.mean()))
    pred = np.where(tick_data["score"][:60] >= 0.5, "yes", "no")
    assert (tick.labeled, tick.errors) == (60, int(np.sum(pred != tick_data["labels"][:60])))


def test_detector_on_window_summaries_flags_a_shift_in_feature_score_and_errors() -> None:
    from driftline.detectors.summaries import ReferenceProfile, WindowSummary

    rng = np.random.default_rng(13)
    ref_data = classifier_batch(rng, 50_000)
    profile = ReferenceProfile.fit({"x": ref_data["x"]}, classes=("no", "yes"))
    ref_summary = WindowSummary.of(profile, {"x": ref_data["x"]}, scores=ref_data["score"])
    ref_summary.add_labels(labels=ref_data["labels"].tolist(), scores=ref_data["score"])
    det = TickChangeDetector(TickReference.from_summary(ref_summary), false_alarm_rate=1e-4)
    found = []
    for t in range(60):
        batch = classifier_batch(rng, 100, shift=1.0 if t >= 40 else 0.0)
        if t >= 40:  # the label relationship breaks too: labels no longer follow the score
            batch["labels"] = np.where(rng.random(100) < 0.5, "yes", "no")
        summary = WindowSummary.of(profile, {"x": batch["x"]}, scores=batch["score"])
        summary.add_labels(labels=batch["labels"].tolist(), scores=batch["score"])
        found.append(det.update(summary))
    assert not any(found[:40])
    first: dict[str, int] = {}
    for t, fs in enumerate(found):
        for f in fs:
            first.setdefault(f.feature, t)
    assert set(first) == {"x", "score", "error_rate"}, first
    assert first["x"] <= 42 and first["score"] <= 42 and first["error_rate"] <= 45, first
