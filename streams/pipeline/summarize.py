"""Fold decoded predictions into ``detectors.summaries.WindowSummary`` column by column."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from driftline.detectors.feature_limits import drop_new_features
from driftline.detectors.reference import ReferenceProfile
from driftline.detectors.summaries import WindowSummary
from driftline.streams.config.model_config import MonitoringConfig, ResolvedModelConfig
from driftline.streams.pipeline.decode import Output, Prediction, column

# Before a model has a reference its outputs are watched like features under these names.
SCORE, LABEL, VALUE = "prediction.score", "prediction.label", "prediction.value"
DISCOVERY = ReferenceProfile.discovery()
MAX_LABELS = 20
DEFAULTS = MonitoringConfig()


def is_output(name: str) -> bool:
    """A model output watched under a feature's name (never counted against `summary.max_features`)."""
    return name.startswith("prediction.")


def as_label(value: Any) -> str:
    """One spelling per label, whichever client wrote it: True -> "true", 1.0 -> "1"."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is float and value.is_integer():
        return str(int(value))
    return str(value)


_NUMBERS = frozenset((int, float, type(None)))
_TEXT = frozenset((str, type(None)))
_FLAGS = frozenset((bool, type(None)))
_FLAG_NAMES = {True: "true", False: "false", None: None}


def feature_columns(features: list[dict[str, Any]], types: Mapping[str, str] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, list[Any]]]:
    """Numeric columns (NaN = missing) for features holding numbers, the rest as categorical columns.

    A feature with numbers and strings in one batch goes to both mappings; the summary counts the values
    of the type its profile does not expect as type errors. ``types`` (the model configuration's
    ``features``) drops ``ignore`` features and forces a type: a ``categorical`` feature's numbers become
    category names (zip codes), a ``numeric`` feature's strings count as type errors.
    """
    types = types or {}
    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, list[Any]] = {}
    only_numbers = set(map(type, chain.from_iterable(map(dict.values, features)))) <= _NUMBERS  # the usual batch
    for name in sorted(set().union(*features)):
        forced = types.get(name)
        if forced == "ignore":
            continue
        try:  # the usual batch: every event has every feature
            values = list(map(itemgetter(name), features))
        except KeyError:
            values = [f.get(name) for f in features]
        if forced == "categorical":
            categorical[name] = [None if v is None else v if type(v) is str else as_label(v) for v in values]
            continue
        if only_numbers:
            numeric[name] = np.array(values, dtype=np.float64)
            continue
        kinds = set(map(type, values))
        if forced is None and str in kinds and kinds <= _TEXT:  # a categorical feature as clients send it
            categorical[name] = values
            continue
        if forced is None and bool in kinds and kinds <= _FLAGS:  # a boolean feature: categories "true", "false"
            categorical[name] = list(map(_FLAG_NAMES.__getitem__, values))
            continue
        if forced == "numeric" and not kinds & {int, float}:
            numeric[name] = np.full(len(values), np.nan)
        elif kinds <= {int, float, type(None)}:
            numeric[name] = np.array(values, dtype=np.float64)
            continue
        if kinds & {int, float}:
            numeric[name] = np.array([v if type(v) in (int, float) else np.nan for v in values], dtype=np.float64)
        categorical[name] = [v if type(v) is str or v is None else as_label(v) if type(v) is bool else None
                             for v in values]
    return numeric, categorical


def as_labels(values: list[Any]) -> list[str | None]:
    """``as_label`` over a column, skipping the work when the client already wrote strings."""
    if set(map(type, values)) <= {str, type(None)}:
        return values
    return [None if v is None else as_label(v) for v in values]


class FeatureColumns(NamedTuple):
    """The feature columns and outputs of records that `PredictionSummarizer.add` built for their window: the
    ticks of the same records read them (`BuiltColumns`) rather than building them again."""

    rows: np.ndarray  # the records' positions in their batch, ascending
    numeric: dict[str, np.ndarray]
    categorical: dict[str, list[Any]]
    outputs: list[Output]

    def take(self, positions: np.ndarray) -> FeatureColumns:
        """The records at ``positions`` (indices into these columns, ascending)."""
        at = positions.tolist()
        return FeatureColumns(self.rows[positions], {name: x[positions] for name, x in self.numeric.items()},
                              {name: [x[i] for i in at] for name, x in self.categorical.items()},
                              [self.outputs[i] for i in at])


class BuiltColumns:
    """The columns `PredictionSummarizer.add` built for a batch's windows, found by the records they hold.

    Each record of a batch is in one window at most, so an owner per record finds a tick's window at once
    (a search through every window's columns cost each tick as much as the windows in the batch: with 100
    models, more than the tick fold itself).
    """

    def __init__(self, n_records: int) -> None:
        self.built: list[FeatureColumns] = []
        self.owner = np.full(n_records, -1, dtype=np.int64)

    def add(self, columns: FeatureColumns) -> None:
        self.owner[columns.rows] = len(self.built)
        self.built.append(columns)

    def for_rows(self, rows: Sequence[int]) -> FeatureColumns | None:
        """The columns of the records at batch positions ``rows`` (ascending) if one window's columns hold them all."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return None
        at = int(self.owner[rows[0]])
        if at < 0 or not bool((self.owner[rows] == at).all()):
            return None
        columns = self.built[at]
        return columns if len(rows) == len(columns.rows) else columns.take(np.searchsorted(columns.rows, rows))


def _column(outputs: list[Output], key: str) -> list[Any] | None:
    values = column(outputs, key)
    return values if values.count(None) < len(values) else None


class PredictionSummarizer:
    """The summarize stage's summarizer: one WindowSummary per open window, binned against the model's profile."""

    def __init__(self, profile_for: Callable[[str, str, int], ReferenceProfile] | None = None,
                 config_for: Callable[[str, str], ResolvedModelConfig] | None = None) -> None:
        self.profile_for = profile_for or (lambda _model, _version, _start: DISCOVERY)
        self.config_for = config_for or (lambda model, version: DEFAULTS.resolve(model, version))

    def new(self, model_id: str, model_version: str, window_start_ms: int) -> WindowSummary:
        """An empty summary with the model's profile and configured sizes (fixed for the window's life)."""
        config = self.config_for(model_id, model_version)
        sizes = config.summary
        acc = WindowSummary.empty(self.profile_for(model_id, model_version, window_start_ms),
                                  slice_pairs=config.slice_pairs, max_slices=sizes.max_slices,
                                  reservoir_size=sizes.reservoir_size, score_bins=sizes.score_bins,
                                  cal_bins=sizes.cal_bins, max_features=sizes.max_features)
        return acc

    def add(self, acc: WindowSummary, predictions: list[Prediction], rows: Sequence[int] | None = None
            ) -> FeatureColumns | None:
        """Fold one model version's predictions in; feature types and slices follow its configuration now.

        Returns the feature columns it built, for the ticks of the same records (``rows``: their positions in
        the batch), unless the window discovers its features (its model version has no ticks then).
        """
        config = self.config_for(predictions[0].model_id, predictions[0].model_version)
        types = config.features
        features, _ = drop_new_features(acc, [p.features for p in predictions],
                                        lambda name: is_output(name) or types.get(name) == "ignore")
        numeric, categorical = feature_columns(features, types)
        outputs = column(predictions, "prediction")
        scores, labels, values = _column(outputs, "score"), _column(outputs, "label"), _column(outputs, "value")
        kwargs: dict[str, Any] = {}
        if acc.classifier is not None:
            kwargs["scores"] = None if scores is None else np.array(scores, dtype=np.float64)
            kwargs["predicted"] = None if labels is None else as_labels(labels)
        elif acc.regression is not None:
            kwargs["values"] = None if values is None else np.array(values, dtype=np.float64)
        elif acc.discover:
            for name, output in ((SCORE, scores), (VALUE, values)):
                if output is not None:
                    numeric[name] = np.array(output, dtype=np.float64)
            if labels is not None:
                names = as_labels(labels)
                categorical[LABEL] = names
                if scores is not None:
                    # per predicted label, so an automatic reference can tell the positive class
                    score_column, name_column = numeric[SCORE], np.array(names, dtype=object)
                    for label in sorted({n for n in names if n is not None})[:MAX_LABELS]:
                        numeric[f"{SCORE}[{label}]"] = np.where(name_column == label, score_column, np.nan)
        all_segments = column(predictions, "segments")
        segment_names = set().union(*all_segments)
        if config.slices is not None:
            segment_names &= set(config.slices)
        segments = {}
        for name in sorted(segment_names):
            try:
                segments[name] = list(map(itemgetter(name), all_segments))
            except KeyError:
                segments[name] = [s.get(name) for s in all_segments]
        built = None if acc.discover or rows is None else FeatureColumns(
            np.asarray(rows, dtype=np.int64), dict(numeric), dict(categorical), outputs)
        acc.add_predictions(column(predictions, "prediction_id"), numeric, categorical, segments=segments or None,
                            **kwargs)
        return built

    def to_bytes(self, acc: WindowSummary) -> bytes:
        return acc.to_bytes()
