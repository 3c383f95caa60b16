"""The summarize stage's summarizer applies the model configuration: feature types, ignored features, slices, sizes."""

from __future__ import annotations

import numpy as np

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
