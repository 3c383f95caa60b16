"""The merge stage's window rows (``streams.pipeline.rows``) without a broker: which partition summaries
merge, the base metrics against numpy on the same data, and the row layout the ``windows`` table expects."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY

from driftline.detectors.findings import Finding
from driftline.detectors.summaries import ReferenceProfile, WindowSummary
from driftline.streams import store
from driftline.streams.pipeline.envelope import SummaryHeader
from driftline.streams.pipeline.rows import base_metrics, merge_parts, to_rows

KEY = ("fraud", "3", 120_000)


def profile(scale: float) -> ReferenceProfile:
    rng = np.random.default_rng(1)
    return ReferenceProfile.fit({"amount": rng.normal(0, scale, 500), "age": rng.normal(40, 10, 500)})


def summary(prof: ReferenceProfile, amount: np.ndarray, **sizes: int | bool) -> WindowSummary:
    s = WindowSummary.empty(prof, **sizes)  # type: ignore[arg-type]
    s.add_predictions(None, {"amount": amount, "age": np.full(len(amount), np.nan)}, {})
    return s


def parts(*summaries: WindowSummary) -> list[tuple[SummaryHeader, bytes]]:
    return [(SummaryHeader(*KEY, 60_000, 0, i, len(summaries), 0, s.n, s.n, 0, None), s.to_bytes())
            for i, s in enumerate(summaries)]


def conflicts_counted() -> float:
    return REGISTRY.get_sample_value("driftline_merge_conflicts_total", {"kind": "predictions"}) or 0.0


def test_partition_summaries_made_against_another_profile_or_sizes_are_left_out_and_counted():
    p, q = profile(1.0), profile(3.0)
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 100), rng.normal(0, 1, 50)
    before = conflicts_counted()
    merged, unmerged, left_out = merge_parts(parts(
        summary(p, a), summary(q, rng.normal(0, 3, 30)), summary(p, b),
        summary(p, rng.normal(0, 1, 7), max_slices=10), summary(p, rng.normal(0, 1, 5), reservoir_size=8),
        summary(p, rng.normal(0, 1, 3), slice_pairs=True)))
    assert (merged.profile_hash, merged.n, unmerged, left_out) == (p.content_hash(), 150, 30 + 7 + 5 + 3, 4)
    assert merged.numeric["amount"].mean == pytest.approx(np.concatenate([a, b]).mean(), rel=1e-12)
    assert conflicts_counted() - before == 4


def test_the_profile_of_most_events_wins_even_against_more_partitions():
    p, q = profile(1.0), profile(3.0)
    rng = np.random.default_rng(3)
    merged, unmerged, left_out = merge_parts(parts(summary(p, rng.normal(0, 1, 10)), summary(p, rng.normal(0, 1, 10)),
                                                   summary(q, rng.normal(0, 3, 40))))
    assert (merged.profile_hash, merged.n, unmerged, left_out) == (q.content_hash(), 40, 20, 2)


def test_a_single_agreeing_set_merges_everything_and_reports_no_conflict():
    p = profile(1.0)
    rng = np.random.default_rng(4)
    before = conflicts_counted()
    merged, unmerged, left_out = merge_parts(parts(*(summary(p, rng.normal(0, 1, 20)) for _ in range(3))))
    assert (merged.n, unmerged, left_out, conflicts_counted() - before) == (60, 0, 0, 0)


def test_base_metrics_match_numpy_on_the_same_data_with_missing_values():
    rng = np.random.default_rng(5)
    amount = rng.normal(0, 1, 1000)
    amount[rng.choice(1000, 37, replace=False)] = np.nan
    halves = [summary(profile(1.0), amount[:400]), summary(profile(1.0), amount[400:])]  # merged as the stage does
    merged, _, _ = merge_parts(parts(*halves))
    found = {(f.metric, f.feature): f for f in base_metrics(merged, late_events=6, unmerged=0, conflicts=0)}
    assert found["count", ""].value == 1000 and found["late_events", ""].value == 6
    assert found["missing", "amount"].value == np.isnan(amount).sum() == 37
    assert found["missing", "amount"].detail == {"n": 1000}
    assert found["mean", "amount"].value == pytest.approx(np.nanmean(amount), rel=1e-12, abs=1e-12)
    assert (found["min", "amount"].value, found["max", "amount"].value) == (np.nanmin(amount), np.nanmax(amount))
    assert found["mean", "amount"].detail == {"n": 963}
    # a feature with no value at all: only its missing count, never a NaN mean/min/max
    assert found["missing", "age"].value == 1000 and ("mean", "age") not in found and ("min", "age") not in found
    assert ("merge_conflict", "") not in found and ("unmerged_events", "") not in found


def test_base_metrics_report_what_the_merge_left_out():
    found = {f.metric: f for f in base_metrics(summary(profile(1.0), np.zeros(3)), 0, unmerged=12, conflicts=2)}
    assert (found["unmerged_events"].value, found["merge_conflict"].value) == (12.0, 2.0)
    assert found["merge_conflict"].detail == {"left_out": "partition summaries"}


def test_to_rows_lays_each_finding_out_in_the_windows_tables_column_order():
    findings = [Finding("psi", 0.31, 0.2, True, feature="amount", slice="region=eu", p_value=0.01,
                        detail={"n": 77, "bins": np.array([1, 2]), 3: "x"}),
                Finding("count", 150.0, None, False)]
    rows = to_rows(KEY, 60_000, findings, n_default=150, reference_id="ref-1", config_version="cfg-2", revision=4)
    assert all(len(row) == len(store.WINDOW_COLUMNS) for row in rows)
    psi, count = (dict(zip(store.WINDOW_COLUMNS, row, strict=True)) for row in rows)
    start, end = datetime(1970, 1, 1, 0, 2, tzinfo=UTC), datetime(1970, 1, 1, 0, 3, tzinfo=UTC)
    assert psi == {"model_id": "fraud", "model_version": "3", "window_start": start, "window_end": end,
                   "metric": "psi", "feature": "amount", "slice": "region=eu", "value": 0.31, "n": 77, "breached": 1,
                   "threshold": 0.2, "p_value": 0.01, "detail": psi["detail"], "reference_id": "ref-1",
                   "config_version": "cfg-2", "revision": 4}
    assert orjson.loads(psi["detail"]) == {"bins": [1, 2], "3": "x"}  # n is a column, not repeated in detail
    assert (count["n"], count["breached"], count["threshold"], count["detail"]) == (150, 0, None, "{}")
    assert findings[0].detail["n"] == 77  # the finding itself is left as it was


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_to_rows_stores_every_non_finite_value_as_nan(value: float):
    (row,) = to_rows(KEY, 60_000, [Finding("ks", value, 0.1, False)], 0)
    assert math.isnan(row[store.WINDOW_COLUMNS.index("value")])
