"""Issue #14, high-cardinality abuse, without a broker: the feature limit of discovery summaries, the model slots
of a summarize worker, the folded categories, and the chi2 test on folded categories against scipy."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from functools import reduce

import numpy as np
import pytest
from prometheus_client import REGISTRY
from scipy import stats

from driftline.detectors.drift import UnivariateDrift
from driftline.detectors.feature_limits import keep_features
from driftline.detectors.hashing import hash_strings
from driftline.detectors.summaries import CategoricalSummary, ReferenceProfile, WindowSummary
from driftline.streams.config.model_config import MonitoringConfig, ReferenceConfig
from driftline.streams.config.settings import Settings
from driftline.streams.pipeline import envelope
from driftline.streams.pipeline.decode import Output, Prediction
from driftline.streams.pipeline.envelope import SummaryHeader
from driftline.streams.pipeline.model_slots import ModelLimitReached, ModelSlots
from driftline.streams.pipeline.rows import WindowRows
from driftline.streams.pipeline.summarize import SCORE, PredictionSummarizer, is_output
from driftline.streams.references import automatic
from driftline.streams.references.automatic import AutoReferences
from driftline.streams.references.book import ReferenceBook
from driftline.streams.stages.merge_stage import MergeStage, SinkPartition
from tests.streams.test_merge_close import _Client, _Finalizer, _Message

N_NAMES, PER_RECORD, LIMIT = 40, 6, 10


def wide(n: int, seed: int = 0, offset: int = 0) -> list[Prediction]:
    """Records naming PER_RECORD of N_NAMES rotating features (some missing), plus the model's outputs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        names = [f"x{(offset + i * PER_RECORD + j) % N_NAMES:02d}" for j in range(PER_RECORD)]
        feats: dict[str, object] = {name: None if rng.random() < 0.1 else float(rng.normal()) for name in names}
        feats["core"] = "a" if i % 3 else "b"
        out.append(Prediction(1, f"p{seed}-{i}", "wide", "1", 1000 + i, feats, Output(score=float(rng.random()))))
    return out


def summarizer(limit: int = LIMIT) -> PredictionSummarizer:
    return PredictionSummarizer(config_for=MonitoringConfig.from_dict(
        {"defaults": {"summary": {"max_features": limit}}}).resolve)


def summarised(records: list[Prediction], batch: int, limit: int = LIMIT) -> WindowSummary:
    s = summarizer(limit)
    acc = s.new("wide", "1", 0)
    for start in range(0, len(records), batch):
        s.add(acc, records[start:start + batch])
    return acc


def values_of(records: list[Prediction]) -> int:
    return sum(v is not None for p in records for v in p.features.values())


def kept_values(acc: WindowSummary) -> int:
    return sum(ns.count for name, ns in acc.numeric.items() if not is_output(name)) + \
        sum(cs.valid for name, cs in acc.categorical.items() if not is_output(name))


def test_features_over_the_limit_are_dropped_counted_and_chosen_by_record_order_not_batch_cuts():
    records = wide(300, offset=17)
    whole = summarised(records, len(records))
    features = {name for name in [*whole.numeric, *whole.categorical] if not is_output(name)}
    # the first LIMIT names the records hold, in order (not sorted): x17..x22 and core, then x23..x25
    assert features == {"core", *(f"x{j:02d}" for j in range(17, 26))}
    assert whole.numeric[SCORE].count == 300  # the model's outputs are never dropped
    assert whole.dropped_features > 0
    assert kept_values(whole) + whole.dropped_features == values_of(records)
    for batch in (1, 7, 64):
        cut = summarised(records, batch)
        assert (sorted(cut.numeric), sorted(cut.categorical)) == (sorted(whole.numeric), sorted(whole.categorical))
        assert cut.dropped_features == whole.dropped_features
        assert {k: v.count for k, v in cut.numeric.items()} == {k: v.count for k, v in whole.numeric.items()}


def test_a_model_within_the_limit_is_summarised_as_without_one():
    records = wide(200)
    at_limit = summarised(records, 50, limit=N_NAMES + 1)
    unlimited = summarised(records, 50, limit=10**6)
    assert at_limit.dropped_features == 0
    assert at_limit.merge(unlimited)  # same mergeable layout
    assert {k: v.count for k, v in at_limit.numeric.items()} == {k: v.count for k, v in unlimited.numeric.items()}


def test_with_a_reference_the_profile_fixes_the_features_and_the_limit_drops_nothing():
    rng = np.random.default_rng(1)
    profile = ReferenceProfile.fit({f"x{j:02d}": rng.normal(size=100) for j in range(N_NAMES)})
    s = PredictionSummarizer(lambda *_: profile, MonitoringConfig.from_dict(
        {"defaults": {"summary": {"max_features": 2}}}).resolve)
    acc = s.new("wide", "1", 0)
    s.add(acc, wide(100))
    assert acc.dropped_features == 0 and len(acc.numeric) == N_NAMES
    assert acc.unknown_features == {"core": 100}


def test_merged_windows_keep_the_features_with_most_values_whatever_the_merge_order():
    parts = [summarised(wide(120, seed, offset=7 * seed), 30) for seed in range(3)]
    results = []
    for order in itertools.permutations(parts):
        merged = reduce(WindowSummary.merge, order)
        before = kept_values(merged) + merged.dropped_features
        keep_features(merged, is_output)
        assert kept_values(merged) + merged.dropped_features == before  # every value kept or counted
        results.append((sorted(merged.numeric), sorted(merged.categorical), merged.dropped_features,
                        {k: v.count for k, v in merged.numeric.items()}))
    assert all(r == results[0] for r in results)
    assert len([n for n in results[0][0] + results[0][1] if not is_output(n)]) == LIMIT
    assert sum(p.dropped_features for p in parts) < results[0][2]


def test_dropped_features_and_folded_categories_become_rows_and_metrics():
    acc = summarised(wide(300), 100)
    acc.add_predictions(None, {}, {"merchant": [f"m{i}" for i in range(400)]})
    assert acc.categorical["merchant"].folded == 400 - CategoricalSummary.MAX_UNSEEN
    merged = WindowSummary.from_bytes(acc.to_bytes())
    keep_features(merged, is_output)  # merchant, added past the summarizer, is one too many: the rarest goes
    assert "merchant" in merged.categorical and merged.dropped_features > acc.dropped_features
    rows = WindowRows(ReferenceBook(), MonitoringConfig().resolve, lambda _ref: None)
    header = SummaryHeader("wide", "1", 0, 60_000, 0, 0, 1, 0, acc.n, acc.n, 0, None)

    def counted(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    before = counted("driftline_dropped_features_total"), counted("driftline_folded_categories_total")
    out = {(r[4], r[5]): r for r in rows.rows(("wide", "1", 0), 60_000, [(header, acc.to_bytes())])}
    assert out["dropped_features", ""][7] == merged.dropped_features
    assert out["folded_categories", "merchant"][7] == 400 - CategoricalSummary.MAX_UNSEEN
    assert out["folded_categories", "merchant"][8] == 400  # n: the feature's values
    assert ("folded_categories", "core") not in out  # two categories, both kept
    after = counted("driftline_dropped_features_total"), counted("driftline_folded_categories_total")
    assert after[0] - before[0] == merged.dropped_features
    assert after[1] - before[1] == 400 - CategoricalSummary.MAX_UNSEEN


def test_the_summary_keeps_its_limit_and_drops_through_bytes_and_merges():
    a, b = summarised(wide(100), 100, limit=5), summarised(wide(100, 1), 100, limit=8)
    back = WindowSummary.from_bytes(a.to_bytes())
    assert (back.max_features, back.dropped_features) == (5, a.dropped_features)
    assert a.merge(b).max_features == 5
    assert a.merge(b).dropped_features == a.dropped_features + b.dropped_features


def test_folded_is_exact_and_the_same_in_any_merge_order():
    rng = np.random.default_rng(3)
    values = [f"v{int(k)}" for k in rng.zipf(1.3, 6000)]
    chunks = [values[i::4] for i in range(4)]
    parts = []
    for chunk in chunks:
        s = CategoricalSummary.empty(())
        s.add(chunk)
        parts.append(s)
    counts = Counter(values)
    distinct = sorted(counts)
    ranks = hash_strings(distinct)
    kept = {distinct[i] for i in np.argsort(ranks, kind="stable")[:CategoricalSummary.MAX_UNSEEN]}
    for order in itertools.permutations(parts):
        merged = reduce(CategoricalSummary.merge, order)
        assert merged.unseen == {v: counts[v] for v in kept}
        assert merged.folded == len(values) - sum(counts[v] for v in kept)


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_chi2_on_folded_categories_equals_scipy_on_the_data_folded_by_hand(shift: float):
    """The reference keeps its `max_categories` most frequent categories; every other value, in the reference
    and in the window alike, lands in one bucket. scipy on the raw data folded that way gives the same test."""
    rng = np.random.default_rng(14)
    names = [f"c{i:03d}" for i in range(300)]
    weights = 1.0 / np.arange(1, 301) ** 1.1
    ref_values = rng.choice(names, 20_000, p=weights / weights.sum()).tolist()
    tilted = weights * np.exp(shift * rng.normal(size=300))
    window_values = rng.choice([*names, "new-a", "new-b"], 5000,
                               p=np.append(tilted * 0.98 / tilted.sum(), [0.01, 0.01])).tolist()
    profile = ReferenceProfile.fit(categorical={"c": ref_values}, max_categories=12)
    reference = WindowSummary.of(profile, categorical={"c": ref_values})
    window = WindowSummary.of(profile, categorical={"c": window_values})
    found = next(f for f in UnivariateDrift(reference, min_samples=1).update(window) if f.metric == "chi2")

    freq = Counter(ref_values)
    top = sorted(freq, key=lambda v: (-freq[v], v))[:12]

    def folded(values: list[str]) -> list[int]:
        fold = Counter(v if v in top else "__other__" for v in values)
        return [fold[v] for v in [*top, "__other__"]]

    table = np.array([folded(ref_values), folded(window_values)])
    assert reference.categorical["c"].other == table[0, -1]  # the reference folds as the window does
    table = table[:, table.sum(axis=0) > 0]
    statistic, p_value, dof, _ = stats.chi2_contingency(table, correction=False)
    assert found.value == pytest.approx(statistic, rel=1e-9)
    assert found.p_value == pytest.approx(p_value, rel=1e-9, abs=1e-300)
    assert found.detail["dof"] == dof


def test_a_worker_tracks_at_most_its_limit_of_model_versions_and_frees_them_once_the_slowest_partition_moved_on():
    slots = ModelSlots(2)
    slots.check("a", "1")
    slots.routed("a", "1", 130_000)  # window [60 s, 120 s) with 10 s lateness, then the next one
    slots.routed("a", "1", 190_000)
    slots.check("b", "1")
    slots.routed("b", "1", 130_000)
    slots.check("a", "1")  # held: still admitted
    with pytest.raises(ModelLimitReached, match="already tracks 2 model versions"):
        slots.check("c", "1")
    slots.release(None)  # no partition has an event time yet
    slots.release(129_999)  # the slowest partition has not closed b's window
    with pytest.raises(ModelLimitReached):
        slots.check("c", "1")
    slots.release(130_000)
    slots.check("c", "1")
    with pytest.raises(ModelLimitReached):
        slots.check("b", "1")
    assert set(slots.held) == {("a", "1"), ("c", "1")}


def test_a_flood_of_warm_ups_forgets_the_one_with_the_oldest_window(monkeypatch):
    monkeypatch.setattr(automatic, "MAX_WARMING_UP", 2)
    auto, config = AutoReferences(), ReferenceConfig(windows=3)
    window = summarised(wide(10), 10)
    for start, model in ((0, "a"), (0, "b"), (60_000, "a"), (60_000, "c")):
        assert auto.observe(model, "1", start, 60_000, window, None, config) is None
    assert [auto.warming_up(m, "1") for m in "abc"] == [True, False, True]  # b's last window was the oldest
    assert auto.discovery["a", "1"][0] == 2
    auto.observe("b", "1", 120_000, 60_000, window, None, config)
    assert auto.discovery["b", "1"][0] == 1 and not auto.warming_up("a", "1")  # b starts again


def test_the_merge_stage_stops_holding_its_commit_for_a_forgotten_warm_up():
    finalizer = _Finalizer()
    warming = {("m", "1")}
    finalizer.warming_up = lambda model_id, version: (model_id, version) in warming  # type: ignore[method-assign]
    finalizer.rows = lambda *_args: []  # type: ignore[method-assign]
    stage = MergeStage(Settings(kafka_bootstrap="127.0.0.1:1"), finalizer, _Client(), threading.Event())  # type: ignore[arg-type]
    stage.parts[0] = state = SinkPartition()
    header = envelope.SummaryHeader("m", "1", 0, 1000, 0, 0, 1, 0, 0, 1, 0, None)
    stage._process([_Message(7, envelope.encode(header)), _Message(8, envelope.encode(envelope.Watermark(0, 1, 1000)))])  # type: ignore[list-item]
    assert state.warm_up_from == {("m", "1"): 7}
    warming.clear()
    stage._process([_Message(9, envelope.encode(envelope.Watermark(0, 1, 2000)))])  # type: ignore[list-item]
    assert state.warm_up_from == {}
    stage.consumer.close()
