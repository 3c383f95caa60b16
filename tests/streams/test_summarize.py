"""The summarize stage's summarizer applies the model configuration: feature types, ignored features, slices, sizes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.streams.config.model_config import MonitoringConfig
from driftline.streams.pipeline.decode import Output, Prediction
from driftline.streams.pipeline.rows import merge_parts
from driftline.streams.pipeline.summarize import LABEL, SCORE, PredictionSummarizer, feature_columns


def preds(n: int = 6) -> list[Prediction]:
    return [Prediction(1, f"p{i}", "fraud", "3", 1000 + i, {"amount": 10.0 * i, "zip": 75000 + i, "secret": "x",
                                                          "age": None if i == 0 else "old"},
                       Output(score=i / 10, label="fraud" if i % 2 else "ok"),
                       {"region": "eu" if i < 3 else "us", "device": "ios"}) for i in range(n)]


def test_feature_types_and_ignored_features_follow_the_configuration():
    feats = [p.features for p in preds()]
    numeric, categorical = feature_columns(feats)
    assert set(numeric) == {"amount", "zip"} and set(categorical) == {"secret", "age"}
    numeric, categorical = feature_columns(feats, {"zip": "categorical", "secret": "ignore", "age": "numeric"})
    assert set(numeric) == {"amount", "age"} and set(categorical) == {"zip", "age"}
    assert categorical["zip"][:2] == ["75000", "75001"] and np.isnan(numeric["age"]).all()


def value_by_value(features: list[dict[str, Any]], types: dict[str, str]
                   ) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """feature_columns' rules applied one value at a time: the reference its batch fast paths must agree with."""
    numeric: dict[str, list[float]] = {}
    categorical: dict[str, list[Any]] = {}
    batch_of_numbers = all(type(v) in (int, float) or v is None for f in features for v in f.values())
    for name in sorted(set().union(*features)):
        forced = types.get(name)
        values = [f.get(name) for f in features]
        is_number = [type(v) in (int, float) for v in values]
        as_number = [float(v) if number else math.nan for v, number in zip(values, is_number, strict=True)]
        if forced == "ignore":
            continue
        if forced == "categorical":
            categorical[name] = [None if v is None else v if type(v) is str else
                                 ("true" if v else "false") if type(v) is bool else
                                 str(int(v)) if type(v) is float and v.is_integer() else str(v) for v in values]
            continue
        if batch_of_numbers or (all(n or v is None for v, n in zip(values, is_number, strict=True)) and
                                not (forced == "numeric" and not any(is_number))):
            numeric[name] = as_number  # numbers (and missing values) only
            continue
        if any(is_number) or forced == "numeric":
            numeric[name] = as_number
        categorical[name] = [v if type(v) is str or v is None else ("true" if v else "false")
                             if type(v) is bool else None for v in values]
    return numeric, categorical


feature_value = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-1e3, 1e3),
                          st.sampled_from(["a", "b", "c"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["x", "y", "z", "w"]), feature_value, max_size=4), min_size=1,
                max_size=8),
       st.dictionaries(st.sampled_from(["x", "y", "z"]), st.sampled_from(["numeric", "categorical", "ignore"]),
                       max_size=2))
def test_feature_columns_agree_with_the_rules_applied_value_by_value(features, types):
    numeric, categorical = feature_columns(features, types)
    want_numeric, want_categorical = value_by_value(features, types)
    assert numeric.keys() == want_numeric.keys()
    for name, column in numeric.items():
        assert column.tolist() == pytest.approx(want_numeric[name], nan_ok=True), name
    assert categorical == want_categorical


def test_the_summarizer_slices_only_configured_attributes_and_sizes_its_summaries():
    config = MonitoringConfig.from_dict({"models": {"fraud": {
        "features": {"secret": "ignore", "zip": "categorical", "age": "numeric"}, "slices": ["region"],
        "summary": {"reservoir_size": 16}}}})
    summarizer = PredictionSummarizer(config_for=config.resolve)
    acc = summarizer.new("fraud", "3", 0)
    summarizer.add(acc, preds())
    assert acc.reservoir.capacity == 16
    assert {k for k in acc.slices} == {(("region", "eu"),), (("region", "us"),)}
    assert "secret" not in acc.numeric and "secret" not in acc.categorical
    assert acc.categorical["zip"].unseen["75003"] == 1
    assert acc.type_errors == {"age": 5}
    assert acc.numeric[SCORE].count == 6 and acc.categorical[LABEL].unseen == {"fraud": 3, "ok": 3}


def test_summaries_made_with_other_sizes_are_left_out_of_the_merge_and_counted():
    small = PredictionSummarizer(config_for=MonitoringConfig.from_dict(
        {"defaults": {"summary": {"reservoir_size": 8}}}).resolve)
    default = PredictionSummarizer()
    parts = []
    for summarizer, rows in ((default, preds(6)), (default, preds(4)), (small, preds(3))):
        acc = summarizer.new("fraud", "3", 0)
        summarizer.add(acc, rows)
        parts.append((None, summarizer.to_bytes(acc)))
    merged, unmerged, conflicts = merge_parts(parts)  # type: ignore[arg-type]
    assert merged.n == 10 and unmerged == 3 and conflicts == 1
