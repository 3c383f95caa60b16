"""Fold decoded predictions into ``detectors.summaries.WindowSummary`` column by column."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from detectors.reference import ReferenceProfile
from detectors.summaries import WindowSummary
from streams.decode import Prediction

_NUMERIC = {int, float, type(None)}
_NONE = type(None)
EMPTY_PROFILE = ReferenceProfile(numeric_edges={}, categories={})


def _label(value: Any) -> str:
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is float and value.is_integer():
        return str(int(value))
    return str(value)


def feature_columns(features: list[dict[str, Any]], profile: ReferenceProfile
                    ) -> tuple[dict[str, np.ndarray], dict[str, list[str | None]], dict[str, int]]:
    """Split feature dicts into numeric columns (NaN = missing), categorical columns and type errors."""
    names: set[str] = set()
    for f in features:
        names.update(f)
    types = profile.feature_types
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, list[str | None]] = {}
    type_errors: dict[str, int] = {}
    for name in sorted(names):
        values = [f.get(name) for f in features]
        seen = set(map(type, values))
        kind = types.get(name)
        if kind is None:
            kind = "numeric" if seen & {int, float} or seen == {_NONE} else "categorical"
        if kind == "numeric":
            if seen <= _NUMERIC:
                numeric[name] = np.array(values, dtype=np.float64)
            else:
                bad = [v is not None and type(v) not in (int, float) for v in values]
                type_errors[name] = sum(bad)
                numeric[name] = np.array([np.nan if b else v for v, b in zip(values, bad, strict=True)],
                                         dtype=np.float64)
        else:
            if int in seen or float in seen:
                type_errors[name] = sum(type(v) in (int, float) for v in values)
            categorical[name] = [None if v is None else _label(v) for v in values]
    return numeric, categorical, type_errors


class PredictionSummarizer:
    """Stage 1's summarizer: one WindowSummary per open window, binned against the model's profile."""

    def __init__(self, profile_for: Callable[[str, str], ReferenceProfile] | None = None) -> None:
        self.profile_for = profile_for or (lambda _model, _version: EMPTY_PROFILE)

    def new(self, model_id: str, model_version: str) -> WindowSummary:
        return WindowSummary.empty(self.profile_for(model_id, model_version))

    def add(self, acc: WindowSummary, predictions: list[Prediction]) -> None:
        numeric, categorical, type_errors = feature_columns([p.features for p in predictions], acc.profile)
        outputs = [p.prediction for p in predictions]
        scores = [o.get("score") for o in outputs]
        labels = [o.get("label") for o in outputs]
        values = [o.get("value") for o in outputs]
        segment_names: set[str] = set()
        for p in predictions:
            segment_names.update(p.segments)
        acc.add_predictions(
            [p.prediction_id for p in predictions],
            numeric,
            categorical,
            scores=np.array(scores, dtype=np.float64) if any(s is not None for s in scores) else None,
            predicted=[None if v is None else _label(v) for v in labels] if any(v is not None for v in labels)
            else None,
            segments={s: [p.segments.get(s) for p in predictions] for s in sorted(segment_names)} or None,
            values=np.array(values, dtype=np.float64) if any(v is not None for v in values) else None,
        )
        for name, count in type_errors.items():
            acc.type_errors[name] = acc.type_errors.get(name, 0) + count

    def to_bytes(self, acc: WindowSummary) -> bytes:
        return acc.to_bytes()
