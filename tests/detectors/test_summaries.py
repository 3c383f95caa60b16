"""WindowSummary and ReferenceProfile against numpy / scipy / sklearn / torchmetrics on the same data."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from sklearn import metrics
from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError

from driftline.detectors.binning import Binner
from driftline.detectors.codec import ArrayTable, pack, unpack
from driftline.detectors.feature_summaries import CategoricalSummary, NumericSummary
from driftline.detectors.hashing import hash_strings
from driftline.detectors.reference import UNIVERSAL_EDGES
from driftline.detectors.summaries import (
    FORMAT_VERSION,
    ReferenceProfile,
    SliceCounts,
    WindowSummary,
    quantile_edges,
)


def _searchsorted_bins(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)


_ARRAY_KEYS = {"edges", "bins", "counts", "hashes", "values", "pred_counts", "score_hist", "confusion", "cal_count",
               "cal_sum_p", "cal_sum_y", "hist_pos", "hist_neg"}


def _resolved_state(summary: WindowSummary) -> Any:
    """The serialised state with array references replaced by the arrays."""
    state, table = unpack(summary.to_bytes(), FORMAT_VERSION, "WindowSummary")

    def resolve(obj: Any, key: str = "") -> Any:
        if key in _ARRAY_KEYS and isinstance(obj, int):
            return table.arrays[obj]
        if isinstance(obj, dict):
            return {k: resolve(v, k) for k, v in obj.items()}
        if isinstance(obj, list):
            return [resolve(v) for v in obj]
        return obj

    return resolve(state)


def _assert_close(a: Any, b: Any, path: str = "") -> None:
    """Counts (ints, int arrays) exactly equal, floats to 1e-9 relative."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, path
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, err_msg=path)
        else:
            np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {a.keys()} != {b.keys()}"
        for k in a:
            _assert_close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: {a} != {b}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_summaries_equal(a: WindowSummary, b: WindowSummary) -> None:
    _assert_close(_resolved_state(a), _resolved_state(b))


# ---------------------------------------------------------------------------------------------- binning


edge_sets = st.one_of(
    hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(-1e6, 1e6), unique=True),
    st.builds(lambda k, base: np.cumsum(np.full(k, base)), st.integers(1, 40), st.floats(1e-12, 1e3)),
    st.builds(lambda k, r: r ** np.arange(-k, k, dtype=np.float64), st.integers(1, 30), st.floats(1.5, 1e6)),
    st.builds(lambda k, c: np.concatenate([np.linspace(0, 1e-9, k), c + np.linspace(0, 1e-3, k)]),
              st.integers(2, 30), st.floats(1.0, 1e12)),
    st.builds(lambda k, r: np.concatenate([-(r ** np.arange(k, -k, -1.0)), [0.0], r ** np.arange(-k, k, 1.0)]),
              st.integers(1, 200), st.floats(1.01, 3.0)),
)


@settings(max_examples=150, deadline=None)
@given(edges=edge_sets, seed=st.integers(0, 2**32 - 1))
def test_binner_equals_searchsorted(edges: np.ndarray, seed: int) -> None:
    edges = np.unique(edges[np.isfinite(edges)])
    rng = np.random.default_rng(seed)
    span = max(float(np.abs(edges).max()), 1.0)
    x = np.concatenate([
        edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf),
        rng.uniform(-2 * span, 2 * span, 500), rng.choice(edges, 500) * rng.uniform(0.999, 1.001, 500),
        [0.0, -0.0, 1e308, -1e308, 5e-324],
    ])
    np.testing.assert_array_equal(Binner(edges).counts(x), _searchsorted_bins(edges, x))


def test_binner_lays_the_universal_log_grid_out_by_bit_pattern_and_stays_exact() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.choice([-1.0, 1.0], 200_000) * 10 ** rng.uniform(-9, 17, 200_000),
                        rng.normal(size=100_000), UNIVERSAL_EDGES, np.nextafter(UNIVERSAL_EDGES, -np.inf),
                        [0.0, -0.0, 5e-324, -5e-324, 1e308, -1e308]])
    b = Binner(UNIVERSAL_EDGES)
    assert b.fold is not None and not b._nested  # every cell settled by comparisons, no nested search
    np.testing.assert_array_equal(b.counts(x), _searchsorted_bins(UNIVERSAL_EDGES, x))


def test_binner_large_input_spans_chunks() -> None:
    rng = np.random.default_rng(3)
    edges = quantile_edges(rng.lognormal(0, 2, 5000), 50)
    x = rng.lognormal(0, 2, 100_003)
    np.testing.assert_array_equal(Binner(edges).counts(x), _searchsorted_bins(edges, x))


def test_hash_does_not_depend_on_batch_width_or_input_type() -> None:
    ids = ["a", "prediction-1", "x" * 70, "é-ü", ""]
    alone = [int(hash_strings([i])[0]) for i in ids]
    assert hash_strings(ids).tolist() == alone
    assert hash_strings(np.array(ids)).tolist() == alone
    assert hash_strings([i.encode() for i in ids]).tolist() == alone
    assert len(set(alone)) == len(ids)


# ---------------------------------------------------------------------------------------------- profile


def test_quantile_edges_are_valid_for_every_shape_of_data() -> None:
    rng = np.random.default_rng(0)
    cases = {
        "normal": rng.normal(size=10_000),
        "constant": np.full(100, 7.5),
        "two values": rng.integers(0, 2, 1000).astype(float),
        "capped": np.minimum(rng.exponential(size=1000), 1.0),
        "with nan and inf": np.concatenate([rng.normal(size=100), [np.nan, np.inf, -np.inf]]),
    }
    for name, x in cases.items():
        edges = quantile_edges(x, 50)
        finite = x[np.isfinite(x)]
        assert np.all(np.diff(edges) > 0), name
        assert edges[0] == finite.min(), name
        assert edges[-1] == np.nextafter(finite.max(), np.inf), name
        assert edges.size <= 52, name
        bins = _searchsorted_bins(edges, finite)
        assert bins[0] == bins[-1] == 0, f"{name}: the reference itself must be in range"
    assert quantile_edges(cases["two values"], 50).tolist() == [0.0, 1.0, np.nextafter(1.0, 2)]
    capped = _searchsorted_bins(quantile_edges(cases["capped"], 50), cases["capped"])
    assert capped[-2] == np.sum(cases["capped"] == 1.0), "a capped maximum gets a bin of its own"
    with pytest.raises(ValueError, match="no finite"):
        quantile_edges(np.array([np.nan, np.inf]), 10)


def test_fit_keeps_the_1000_most_frequent_categories() -> None:
    values = [f"c{i}" for i in range(1500) for _ in range(1 + i % 7)] + [None, 3]
    profile = ReferenceProfile.fit(categorical={"f": values})
    counts = Counter(v for v in values if isinstance(v, str))
    expected = sorted(counts, key=lambda v: (-counts[v], v))[:1000]
    assert profile.categories["f"] == tuple(expected)
    assert profile.feature_types == {"f": "categorical"}


def test_profile_dict_round_trip_and_content_hash() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=1000)
    profile = ReferenceProfile.fit({"x": x, "k": rng.integers(0, 3, 1000)}, {"c": ["a", "b"] * 10},
                                   classes=["neg", "pos"], n_bins=20)
    data = json.loads(json.dumps(profile.to_dict()))
    again = ReferenceProfile.from_dict(data)
    assert again.content_hash() == profile.content_hash()
    for name, edges in profile.numeric_edges.items():
        np.testing.assert_array_equal(again.numeric_edges[name], edges)
    assert again.classes == ("neg", "pos") and again.task == "classification"
    assert ReferenceProfile.fit({"x": x, "k": rng.integers(0, 3, 1000)}, {"c": ["a", "b"] * 10},
                                classes=["neg", "pos"], n_bins=20).content_hash() == profile.content_hash()
    assert ReferenceProfile.fit({"x": x[:-1]}).content_hash() != ReferenceProfile.fit({"x": x}).content_hash()
    with pytest.raises(ValueError, match="version"):
        ReferenceProfile.from_dict({**data, "version": 99})
    with pytest.raises(ValueError, match="malformed"):
        ReferenceProfile.from_dict({"version": 1})


def test_fit_rejects_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="both numeric and categorical"):
        ReferenceProfile.fit({"a": np.ones(3)}, {"a": ["x"]})
    with pytest.raises(ValueError, match="regression"):
        ReferenceProfile.fit({"a": np.ones(3)}, task="regression")
    with pytest.raises(ValueError, match="classes"):
        ReferenceProfile.fit({"a": np.ones(3)}, task="classification")
    with pytest.raises(ValueError, match="'a'"):
        ReferenceProfile.fit({"a": np.full(3, np.nan)})
    assert ReferenceProfile.fit({"a": np.ones(3)}, values=np.arange(5.0)).task == "regression"


# ---------------------------------------------------------------------------------------------- numeric


def test_numeric_summary_matches_numpy() -> None:
    rng = np.random.default_rng(2)
    edges = quantile_edges(rng.normal(size=2000), 30)
    x = rng.normal(0.3, 1.5, size=50_000)
    x[rng.random(x.size) < 0.1] = np.nan
    x[:3] = [np.inf, -np.inf, np.inf]
    s = NumericSummary.empty(edges)
    assert s.add(x) == 3
    finite = x[np.isfinite(x)]
    assert s.count == finite.size and s.missing == int(np.isnan(x).sum())
    assert math.isclose(s.mean, finite.mean(), rel_tol=1e-12)
    assert math.isclose(s.variance(), finite.var(), rel_tol=1e-12)
    assert math.isclose(s.variance(ddof=1), finite.var(ddof=1), rel_tol=1e-12)
    assert (s.min, s.max) == (finite.min(), finite.max())
    np.testing.assert_array_equal(s.bins, _searchsorted_bins(edges, finite))
    assert s.out_of_range == int(np.sum(finite < edges[0]) + np.sum(finite >= edges[-1]))
    np.testing.assert_allclose(s.cdf_at_edges(), [np.mean(finite < e) for e in edges], rtol=1e-12)


def test_moments_merged_across_splits_match_numpy() -> None:
    rng = np.random.default_rng(4)
    x = 1e6 + rng.normal(0, 3, 100_000)
    edges = quantile_edges(x[:1000], 20)
    for parts in (2, 7, 50):
        cuts = np.sort(rng.choice(np.arange(1, x.size), parts - 1, replace=False))
        summaries = []
        for chunk in np.split(x, cuts):
            s = NumericSummary.empty(edges)
            s.add(chunk)
            summaries.append(s)
        merged = summaries[0]
        for s in summaries[1:]:
            merged = merged.merge(s)
        assert merged.count == x.size
        assert math.isclose(merged.mean, x.mean(), rel_tol=1e-9)
        assert math.isclose(merged.variance(), x.var(), rel_tol=1e-9)
        np.testing.assert_array_equal(merged.bins, _searchsorted_bins(edges, x))


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5, 2.0])
def test_ks_from_bins_is_within_the_stated_bound_of_scipy(shift: float) -> None:
    rng = np.random.default_rng(5)
    edges = quantile_edges(rng.normal(size=5000), 20)
    gaps = []
    for _ in range(20):
        a, b = rng.normal(size=int(rng.integers(50, 3000))), rng.normal(shift, 1.2, size=int(rng.integers(50, 3000)))
        sa, sb = NumericSummary.empty(edges), NumericSummary.empty(edges)
        sa.add(a)
        sb.add(b)
        d_bins = sa.ks_distance(sb)
        d_exact = stats.ks_2samp(a, b).statistic
        bound = max(sa.max_bin_mass(), sb.max_bin_mass())
        assert d_bins <= d_exact + 1e-12
        assert d_exact <= d_bins + bound + 1e-12
        gaps.append(d_exact - d_bins)
    assert max(gaps) > 0, "the bins must lose something, else this test checks nothing"


def test_quantile_error_is_within_the_bin_width() -> None:
    rng = np.random.default_rng(6)
    for x in (rng.normal(size=3000), rng.lognormal(0, 1.5, 3000), rng.integers(0, 4, 3000).astype(float)):
        edges = quantile_edges(rng.permutation(x)[:500], 25)
        s = NumericSummary.empty(edges)
        s.add(x)
        lower = np.clip(np.concatenate(([s.min], edges)), s.min, s.max)
        upper = np.clip(np.concatenate((edges, [s.max])), s.min, s.max)
        qs = np.concatenate(([0.0, 1.0], rng.random(200)))
        estimate = s.quantile(qs)
        exact = np.quantile(x, qs, method="inverted_cdf")
        j = np.searchsorted(edges, exact, side="right")
        assert np.all(np.abs(estimate - exact) <= (upper - lower)[j] + 1e-12)
        assert np.all((lower[j] <= estimate) & (estimate <= upper[j]))
    assert math.isnan(NumericSummary.empty(edges).quantile(0.5))


# ---------------------------------------------------------------------------------------------- categorical


def test_categorical_summary_matches_counter() -> None:
    rng = np.random.default_rng(7)
    cats = ("a", "b", "c")
    pool = np.array(["a", "b", "c", "new1", "new2", None, math.nan, 5, True], dtype=object)
    values = list(rng.choice(pool, 5000, p=[0.3, 0.2, 0.2, 0.05, 0.05, 0.1, 0.05, 0.03, 0.02]))
    s = CategoricalSummary.empty(cats)
    type_errors, missing = s.add(values)
    counter = Counter(values)
    assert s.counts.tolist() == [counter[c] for c in cats]
    assert s.unseen == {"new1": counter["new1"], "new2": counter["new2"]}
    assert s.other == counter["new1"] + counter["new2"]
    assert s.missing == int(missing.sum()) == sum(1 for v in values if v is None or v != v)
    assert type_errors == sum(1 for v in values if isinstance(v, int | bool))
    assert s.valid + s.missing + type_errors == len(values)


def test_unseen_values_are_bounded_and_merge_order_free() -> None:
    rng = np.random.default_rng(8)
    values = [f"u{int(v)}" for v in rng.zipf(1.3, 6000)]
    parts = [values[i::3] for i in range(3)]
    summaries = []
    for p in parts:
        s = CategoricalSummary.empty(("u1",))
        s.add(p)
        summaries.append(s)
    a, b, c = summaries
    left, right, swapped = a.merge(b).merge(c), a.merge(b.merge(c)), c.merge(a).merge(b)
    whole = CategoricalSummary.empty(("u1",))
    whole.add(values)
    counter = Counter(v for v in values if v != "u1")
    assert len(counter) > CategoricalSummary.MAX_UNSEEN
    for s in (left, right, swapped, whole):
        assert s.unseen_overflow and len(s.unseen) == CategoricalSummary.MAX_UNSEEN
        assert s.unseen == left.unseen
        assert all(s.unseen[k] == counter[k] for k in s.unseen), "kept values carry exact counts"
        assert s.other == sum(counter.values())


# ---------------------------------------------------------------------------------------------- classifier


def test_binary_classifier_matches_sklearn_and_torchmetrics() -> None:
    rng = np.random.default_rng(9)
    n = 4000
    p = rng.beta(2, 2, n)
    y = (rng.random(n) < p**1.3).astype(int)
    profile = ReferenceProfile.fit({"x": rng.normal(size=100)}, classes=["neg", "pos"])
    w = WindowSummary.empty(profile)
    names = np.array(["neg", "pos"])
    w.add_predictions(None, {"x": rng.normal(size=n)}, {}, scores=p)
    w.add_labels(labels=list(names[y]), scores=p)
    c = w.classifier
    assert c is not None
    pred = (p >= 0.5).astype(int)
    np.testing.assert_array_equal(c.pred_counts, np.bincount(pred, minlength=2))
    np.testing.assert_array_equal(c.confusion, metrics.confusion_matrix(y, pred, labels=[0, 1]))
    assert math.isclose(c.expected_correct, np.maximum(p, 1 - p).sum(), rel_tol=1e-12)
    assert c.scored == n and c.labeled == n == c.prob_labeled
    assert math.isclose(c.logloss_sum / n, metrics.log_loss(y, p), rel_tol=1e-12)
    assert math.isclose(c.brier_sum / n, metrics.brier_score_loss(y, p), rel_tol=1e-12)
    hist = np.histogram(p, bins=np.linspace(0, 1, 101))[0]
    np.testing.assert_array_equal(c.score_hist, hist)
    np.testing.assert_array_equal(c.hist_pos + c.hist_neg, hist)
    np.testing.assert_array_equal(c.hist_pos, np.histogram(p[y == 1], bins=np.linspace(0, 1, 101))[0])
    assert math.isclose(metrics.roc_auc_score(y, p), _auc_from_hist(c.hist_pos, c.hist_neg), abs_tol=0.01)
    ece = np.abs(c.cal_sum_p - c.cal_sum_y).sum() / c.cal_count.sum()
    reference = BinaryCalibrationError(n_bins=15, norm="l1")(torch.tensor(p), torch.tensor(y))
    assert math.isclose(ece, float(reference), abs_tol=1e-5)


def test_log_loss_clips_certain_wrong_predictions_like_sklearn() -> None:
    profile = ReferenceProfile.fit({"x": np.arange(5.0)}, classes=["neg", "pos"])
    w = WindowSummary.empty(profile)
    p, y = np.array([0.0, 1.0, 1.0, 0.3, 1e-20]), np.array([1, 0, 1, 0, 1])
    w.add_labels(labels=[["neg", "pos"][i] for i in y], scores=p)
    assert w.classifier is not None
    assert math.isclose(w.classifier.logloss_sum / 5, metrics.log_loss(y, p), rel_tol=1e-12)


def _auc_from_hist(pos: np.ndarray, neg: np.ndarray) -> float:
    below = np.cumsum(neg) - neg
    return float((pos * (below + neg / 2)).sum() / (pos.sum() * neg.sum()))


def test_multiclass_classifier_matches_sklearn_and_torchmetrics() -> None:
    rng = np.random.default_rng(10)
    n, classes = 3000, ["a", "b", "c", "d"]
    probs = rng.dirichlet([0.7] * 4, n)
    y = np.array([rng.choice(4, p=row) for row in probs])
    profile = ReferenceProfile.fit({"x": rng.normal(size=100)}, classes=classes)
    w = WindowSummary.empty(profile)
    labels = [classes[i] for i in y]
    w.add_predictions(None, {}, {}, probabilities=probs)
    w.add_labels(labels=labels, probabilities=probs)
    c = w.classifier
    assert c is not None
    pred = probs.argmax(axis=1)
    np.testing.assert_array_equal(c.pred_counts, np.bincount(pred, minlength=4))
    np.testing.assert_array_equal(c.confusion, metrics.confusion_matrix(y, pred, labels=range(4)))
    np.testing.assert_array_equal(c.score_hist, np.histogram(probs.max(axis=1), bins=np.linspace(0, 1, 101))[0])
    assert math.isclose(c.expected_correct, probs.max(axis=1).sum(), rel_tol=1e-12)
    assert math.isclose(c.logloss_sum / n, metrics.log_loss(y, probs, labels=range(4)), rel_tol=1e-12)
    assert math.isclose(c.brier_sum / n, metrics.brier_score_loss(labels, probs, labels=classes), rel_tol=1e-12)
    ece = np.abs(c.cal_sum_p - c.cal_sum_y).sum() / c.cal_count.sum()
    reference = MulticlassCalibrationError(num_classes=4, n_bins=15, norm="l1")(torch.tensor(probs), torch.tensor(y))
    assert math.isclose(ece, float(reference), abs_tol=1e-5)
    assert c.hist_pos.sum() == c.hist_neg.sum() == 0


def test_classifier_counts_unknown_labels_and_explicit_predictions() -> None:
    profile = ReferenceProfile.fit({"x": np.arange(5.0)}, classes=["neg", "pos"])
    w = WindowSummary.empty(profile)
    scores = np.array([0.9, 0.2, 0.7, np.nan, 0.4])
    w.add_predictions(None, {}, {}, scores=scores, predicted=["neg", None, "pos", "pos", "cat"])
    c = w.classifier
    assert c is not None
    assert c.pred_counts.tolist() == [2, 2] and c.pred_unknown == 1
    assert c.scored == 4
    assert math.isclose(c.expected_correct, 0.1 + 0.8 + 0.7 + 0.6)
    w.add_labels(labels=["pos", "neg", None, "dog", "neg"], predicted=["neg", "neg", "pos", "pos", "cat"],
                 scores=scores)
    assert c.labeled == 2 and c.label_unknown == 2
    assert c.confusion.tolist() == [[1, 0], [1, 0]]
    with pytest.raises(ValueError, match="no regression"):
        w.add_predictions(None, {}, {}, values=np.ones(2))


# ---------------------------------------------------------------------------------------------- regression


def test_regression_summary_matches_numpy_and_sklearn() -> None:
    rng = np.random.default_rng(11)
    truth = rng.normal(10, 3, 5000)
    pred = truth + rng.normal(0.5, 1, 5000)
    pred[:10] = np.nan
    profile = ReferenceProfile.fit({"x": rng.normal(size=100)}, values=rng.normal(10, 3, 1000))
    w = WindowSummary.empty(profile)
    w.add_predictions(None, {}, {}, values=pred)
    w.add_labels(values=pred, true_values=truth)
    r = w.regression
    assert r is not None
    ok = np.isfinite(pred)
    err = pred[ok] - truth[ok]
    assert r.labeled == ok.sum() and r.label_unknown == 10 and r.prediction.count == ok.sum()
    assert math.isclose(r.sum_err, err.sum(), rel_tol=1e-9)
    assert math.isclose(r.sum_abs_err / r.labeled, metrics.mean_absolute_error(truth[ok], pred[ok]), rel_tol=1e-12)
    assert math.isclose(r.sum_sq_err / r.labeled, metrics.mean_squared_error(truth[ok], pred[ok]), rel_tol=1e-12)
    assert math.isclose(1 - r.sum_sq_err / r.target.m2, metrics.r2_score(truth[ok], pred[ok]), rel_tol=1e-9)
    np.testing.assert_array_equal(r.prediction.bins, _searchsorted_bins(profile.prediction_edges, pred[ok]))


# ---------------------------------------------------------------------------------------------- slices


def _segments(rng: np.random.Generator, n: int) -> dict[str, list[str | None]]:
    return {
        "country": list(rng.choice(np.array(["fr", "de", "us", None], dtype=object), n)),
        "device": list(rng.choice(np.array(["ios", "android"], dtype=object), n)),
        "plan": list(rng.choice(np.array(["free", "pro", None], dtype=object), n)),
    }


def test_slices_match_direct_counts() -> None:
    rng = np.random.default_rng(12)
    n = 3000
    seg = _segments(rng, n)
    profile = ReferenceProfile.fit({"x": rng.normal(size=100)}, classes=["neg", "pos"])
    w = WindowSummary.empty(profile, slice_pairs=True)
    p = rng.random(n)
    y = rng.integers(0, 2, n)
    w.add_predictions(None, {}, {}, scores=p, segments=seg)
    w.add_labels(labels=[["neg", "pos"][i] for i in y], scores=p, segments=seg)
    correct = (p >= 0.5).astype(int) == y
    expected: dict[tuple, list[int]] = {}
    attrs = sorted(seg)
    for i in range(n):
        present = [(a, seg[a][i]) for a in attrs if seg[a][i] is not None]
        keys = [(kv,) for kv in present] + [(x, z) for j, x in enumerate(present) for z in present[j + 1 :]]
        for key in keys:
            e = expected.setdefault(key, [0, 0, 0])
            e[0] += 1
            e[1] += 1
            e[2] += int(correct[i])
    assert {k: [v.n, v.labeled, v.correct] for k, v in w.slices.items()} == expected
    assert w.slice_overflow == SliceCounts()


def test_regression_slices_sum_errors() -> None:
    rng = np.random.default_rng(13)
    n = 500
    seg = {"g": list(rng.choice(np.array(["a", "b"], dtype=object), n))}
    profile = ReferenceProfile.fit({"x": rng.normal(size=100)}, values=rng.normal(size=100))
    w = WindowSummary.empty(profile)
    v, t = rng.normal(size=n), rng.normal(size=n)
    w.add_labels(values=v, true_values=t, segments=seg)
    for g in ("a", "b"):
        m = np.array(seg["g"]) == g
        s = w.slices[(("g", g),)]
        assert s.labeled == m.sum() and s.n == 0
        assert math.isclose(s.sum_abs_err, np.abs(v - t)[m].sum(), rel_tol=1e-12)
        assert math.isclose(s.sum_sq_err, ((v - t) ** 2)[m].sum(), rel_tol=1e-12)


def test_slice_keys_are_bounded_and_overflow_is_counted() -> None:
    rng = np.random.default_rng(14)
    n = 4000
    seg = {"user": [f"u{i}" for i in rng.integers(0, 1500, n)], "shop": [f"s{i}" for i in rng.integers(0, 40, n)]}
    profile = ReferenceProfile.fit({"x": rng.normal(size=100)})
    whole = WindowSummary.empty(profile, slice_pairs=True)
    whole.add_predictions(None, {}, {}, segments=seg)
    parts = []
    for k in range(4):
        part = WindowSummary.empty(profile, slice_pairs=True)
        part.add_predictions(None, {}, {}, segments={a: v[k::4] for a, v in seg.items()})
        parts.append(part)
    merged = parts[3].merge(parts[1]).merge(parts[0].merge(parts[2]))
    distinct_singles = len(set(seg["user"])) + len(set(seg["shop"]))
    for s in (whole, merged):
        assert len(s.slices) == 2000
        assert sum(v.n for v in s.slices.values()) + s.slice_overflow.n == 3 * n, "every membership counted"
        assert sum(len(k) == 1 for k in s.slices) == distinct_singles, "single attributes are kept first"
    assert whole.slices == merged.slices and whole.slice_overflow == merged.slice_overflow


# ---------------------------------------------------------------------------------------------- reservoir


def test_reservoir_keeps_the_smallest_id_hashes_whatever_the_split() -> None:
    rng = np.random.default_rng(15)
    n = 5000
    ids = [f"pred-{i}" for i in range(n)]
    x, y = rng.normal(size=n), rng.normal(size=n)
    profile = ReferenceProfile.fit({"y": y, "x": x})
    whole = WindowSummary.of(profile, {"x": x, "y": y}, ids=ids)
    expected = np.argsort(hash_strings(ids))[:512]
    np.testing.assert_array_equal(whole.reservoir.values, np.column_stack([x, y])[expected])
    assert whole.reservoir.feature_names == ("x", "y")
    parts = [WindowSummary.of(profile, {"x": x[s], "y": y[s]}, ids=ids[s]) for s in (slice(0, 100), slice(100, 3000),
                                                                            slice(3000, n))]
    merged = parts[2].merge(parts[0]).merge(parts[1])
    np.testing.assert_array_equal(merged.reservoir.hashes, whole.reservoir.hashes)
    np.testing.assert_array_equal(merged.reservoir.values, whole.reservoir.values)
    assert whole.merge(whole).reservoir.hashes.size == 512, "the same events merged twice are sampled once"


def test_reservoir_without_ids_samples_each_batch_once() -> None:
    profile = ReferenceProfile.fit({"x": np.arange(10.0)})
    batch = {"x": np.zeros(300)}
    a, b = WindowSummary.of(profile, batch), WindowSummary.of(profile, batch)
    assert a.reservoir.hashes.size == 300, "identical rows are still distinct events"
    assert a.merge(b).reservoir.hashes.size == 300
    c = WindowSummary.of(profile, {"x": np.ones(300)})
    assert a.merge(c).reservoir.hashes.size == 512


# ---------------------------------------------------------------------------------------------- types, merge


def test_type_errors_and_unknown_features_are_counted_not_raised() -> None:
    profile = ReferenceProfile.fit({"num": np.arange(10.0)}, {"cat": ["a", "b"]})
    w = WindowSummary.empty(profile)
    w.add_predictions(
        ["1", "2", "3", "4"],
        {"num": np.array(["1.5", None, "oops", 2], dtype=object), "cat": np.array([np.nan, 1.0, np.nan, np.nan]),
         "extra": np.array([1.0, np.nan, 2.0, 3.0])},
        {"num": [None, "str", None, None], "cat": ["a", None, None, "zzz"], "more": ["x", None, None, None]},
    )
    num, cat = w.numeric["num"], w.categorical["cat"]
    assert (num.count, num.missing, w.type_errors["num"]) == (1, 0, 3)
    assert (cat.valid, cat.missing, w.type_errors["cat"]) == (2, 1, 1)
    assert w.unknown_features == {"extra": 3, "more": 1}
    for f, s in (("num", num), ("cat", cat)):
        total = (s.count if f == "num" else s.valid) + s.missing + w.type_errors.get(f, 0)
        assert total == w.n == 4, f


def test_string_numbers_are_type_errors_and_absent_features_are_missing() -> None:
    profile = ReferenceProfile.fit({"num": np.arange(10.0), "gone": np.arange(3.0)})
    w = WindowSummary.of(profile, {"num": ["1", 2.0, None]})
    assert w.numeric["num"].count == 1 and w.numeric["num"].missing == 1 and w.type_errors == {"num": 1}
    assert w.numeric["gone"].missing == 3


def test_merge_refuses_summaries_of_different_profiles() -> None:
    a = WindowSummary.of(ReferenceProfile.fit({"x": np.arange(10.0)}), {"x": np.ones(3)})
    b = WindowSummary.of(ReferenceProfile.fit({"x": np.arange(11.0)}), {"x": np.ones(3)})
    with pytest.raises(ValueError, match="different reference profiles"):
        a.merge(b)


def _batch(rng: np.random.Generator, n: int, start: int) -> dict[str, Any]:
    x = rng.normal(size=n)
    x[rng.random(n) < 0.2] = np.nan
    cats = np.array(["a", "b", "c", "d", "e", "f", None], dtype=object)
    probs = rng.dirichlet([1, 1, 1], n)
    return {
        "ids": [f"id{start + i}" for i in range(n)],
        "numeric": {"x": x, "k": rng.integers(0, 5, n).astype(float), "ghost": rng.normal(size=n)},
        "categorical": {"c": list(rng.choice(cats, n)), "x": [None] * (n - 1) + ["bad"] if n else []},
        "probabilities": probs,
        "labels": [["p", "q", "r", None][i] for i in rng.integers(0, 4, n)],
        "segments": {"s": list(rng.choice(cats, n)), "t": list(rng.choice(cats[:3], n))},
    }


_PROFILE = ReferenceProfile.fit({"x": np.linspace(-2, 2, 50), "k": np.arange(3.0)}, {"c": ["a", "b"]},
                                classes=["p", "q", "r"], n_bins=8)


def _summary(batch: dict[str, Any]) -> WindowSummary:
    w = WindowSummary.empty(_PROFILE, slice_pairs=True, max_slices=6, reservoir_size=5)
    w.add_predictions(batch["ids"], batch["numeric"], batch["categorical"], probabilities=batch["probabilities"],
                      segments=batch["segments"])
    w.add_labels(labels=batch["labels"], probabilities=batch["probabilities"], segments=batch["segments"])
    return w


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(0, 40), min_size=3, max_size=3), seed=st.integers(0, 2**32 - 1))
def test_merge_is_associative_commutative_and_equals_one_pass(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    batches, start = [], 0
    for n in sizes:
        batches.append(_batch(rng, n, start))
        start += n
    a, b, c = (_summary(bt) for bt in batches)
    original = a.to_bytes()
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    assert_summaries_equal(left, right)
    assert_summaries_equal(a.merge(b), b.merge(a))
    assert_summaries_equal(left, c.merge(a).merge(b))
    one = WindowSummary.empty(_PROFILE, slice_pairs=True, max_slices=6, reservoir_size=5)
    for bt in batches:
        one.add_predictions(bt["ids"], bt["numeric"], bt["categorical"], probabilities=bt["probabilities"],
                            segments=bt["segments"])
        one.add_labels(labels=bt["labels"], probabilities=bt["probabilities"], segments=bt["segments"])
    assert_summaries_equal(left, one)
    assert a.to_bytes() == original, "merge must not mutate its inputs"
    assert left.n == sum(sizes)


def test_merge_of_regression_summaries_equals_one_pass() -> None:
    rng = np.random.default_rng(16)
    profile = ReferenceProfile.fit({"x": rng.normal(size=50)}, values=rng.normal(size=50), n_bins=5)
    v, t = rng.normal(size=300), rng.normal(size=300)
    seg = {"g": list(rng.choice(np.array(["a", "b"], dtype=object), 300))}

    def build(s: slice) -> WindowSummary:
        w = WindowSummary.empty(profile)
        w.add_predictions(None, {"x": v[s]}, {}, values=v[s], segments={"g": seg["g"][s]})
        w.add_labels(values=v[s], true_values=t[s], segments={"g": seg["g"][s]})
        return w

    parts = [build(slice(0, 100)), build(slice(100, 220)), build(slice(220, 300))]
    assert_summaries_equal(parts[0].merge(parts[1]).merge(parts[2]), parts[2].merge(parts[1].merge(parts[0])))
    whole = parts[0].merge(parts[1]).merge(parts[2])
    assert whole.regression is not None
    assert math.isclose(whole.regression.sum_sq_err, ((v - t) ** 2).sum(), rel_tol=1e-9)


# ---------------------------------------------------------------------------------------------- bytes


def test_bytes_round_trip_is_exact_and_canonical() -> None:
    rng = np.random.default_rng(17)
    w = _summary(_batch(rng, 300, 0))
    data = w.to_bytes()
    again = WindowSummary.from_bytes(data)
    assert again.to_bytes() == data
    assert_summaries_equal(w, again)
    np.testing.assert_array_equal(again.numeric["x"].bins, w.numeric["x"].bins)
    assert again.slices == w.slices and again.type_errors == w.type_errors == {"x": 1}
    empty = WindowSummary.empty(_PROFILE)
    restored = WindowSummary.from_bytes(empty.to_bytes())
    assert restored.numeric["x"].min == math.inf and restored.numeric["x"].max == -math.inf
    assert len(data) < 20_000


@settings(max_examples=60, deadline=None)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_corrupt_bytes_raise_value_error(position: int, value: int) -> None:
    data = bytearray(_summary(_batch(np.random.default_rng(1), 50, 0)).to_bytes())
    position %= len(data)
    if data[position] == value:
        return
    data[position] = value
    with pytest.raises(ValueError, match=r"corrupt|unsupported"):
        WindowSummary.from_bytes(bytes(data))


def test_unknown_version_truncation_and_bad_content_raise_value_error() -> None:
    data = WindowSummary.empty(_PROFILE).to_bytes()
    with pytest.raises(ValueError, match="unsupported WindowSummary format version 9"):
        WindowSummary.from_bytes(bytes([9]) + data[1:])
    for bad in (b"", data[:5], data[:-1], data + b"\x00"):
        with pytest.raises(ValueError, match="corrupt"):
            WindowSummary.from_bytes(bad)
    with pytest.raises(ValueError, match="corrupt"):
        WindowSummary.from_bytes(pack(FORMAT_VERSION, {"n": 1}, ArrayTable()))
    with pytest.raises(ValueError):
        WindowSummary.from_bytes("not bytes")  # type: ignore[arg-type]


def test_discovery_summaries_merge_to_the_one_pass_summary_whatever_features_each_part_saw():
    from driftline.detectors.reference import UNIVERSAL_EDGES

    rng = np.random.default_rng(11)
    n = 900
    x = rng.lognormal(2.0, 1.0, n)
    y = rng.normal(-3.0, 2.0, n)
    cats = rng.choice(["a", "b", "c"], n).tolist()
    profile = ReferenceProfile.discovery()

    def part(lo: int, hi: int, with_y: bool, with_c: bool) -> WindowSummary:
        s = WindowSummary.empty(profile)
        numeric = {"x": x[lo:hi]} | ({"y": y[lo:hi]} if with_y else {})
        s.add_predictions([str(i) for i in range(lo, hi)], numeric, {"c": cats[lo:hi]} if with_c else {})
        return s

    parts = [part(0, 300, False, True), part(300, 600, True, False), part(600, 900, True, True)]
    one = WindowSummary.empty(profile)
    for lo, hi, wy, wc in ((0, 300, False, True), (300, 600, True, False), (600, 900, True, True)):
        one.add_predictions([str(i) for i in range(lo, hi)], {"x": x[lo:hi]} | ({"y": y[lo:hi]} if wy else {}),
                            {"c": cats[lo:hi]} if wc else {})
    for merged in (parts[0].merge(parts[1]).merge(parts[2]), parts[2].merge(parts[0].merge(parts[1])),
                   WindowSummary.from_bytes(parts[1].merge(parts[2]).merge(parts[0]).to_bytes())):
        assert merged.n == one.n == n
        assert merged.numeric["y"].missing == 300 and merged.numeric["y"].count == 600
        assert np.isclose(merged.numeric["y"].mean, y[300:].mean(), rtol=1e-12)
        assert merged.numeric["x"].bins.tolist() == np.bincount(
            np.searchsorted(UNIVERSAL_EDGES, x, side="right"), minlength=UNIVERSAL_EDGES.size + 1).tolist()
        assert merged.categorical["c"].missing == 300
        assert merged.categorical["c"].unseen == one.categorical["c"].unseen
    with pytest.raises(ValueError, match="different reference profiles"):
        parts[0].merge(WindowSummary.empty(ReferenceProfile.fit({"x": x}, {})))
