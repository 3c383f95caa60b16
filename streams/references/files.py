"""``driftline reference set``: turn a file of reference predictions into a published reference.

Accepted files:

- ``.jsonl``: prediction events (schemas/prediction.v1.json, e.g. a dump of the topic), one per line. A line
  may add the ground truth as a top-level ``label`` field (string, number or boolean). Only reference files
  accept that field: on the bus the prediction contract is unchanged and truth travels as label events.
- ``.csv`` / ``.parquet``: one column per feature, plus the optional columns ``prediction_score``,
  ``prediction_label``, ``prediction_value``, ``prediction_id``, the ground truth ``label``, and one
  ``segment.<name>`` column per segment attribute (numbers are spelt as labels are: 3 -> "3").

A row without ground truth (field absent, null, an empty cell) is summarised as a prediction only. With
ground truth the reference summary holds what live label windows hold (confusion matrix, calibration bins,
score histograms per class, labelled counts per slice, regression errors), so the detectors that compare
labelled windows with the reference run against the file: accuracy, f1_macro, roc_auc, log_loss, brier,
rmse, calibration_hl, ece, and slice_accuracy / worst_slice with ``baseline: reference``. A classifier's
truth must be one of the classes its predicted labels use, a regressor's a number; any other value stops
the command, naming the row (or line) and the column.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from driftline.detectors.reference import ReferenceProfile
from driftline.detectors.summaries import WindowSummary
from driftline.errors import ReferenceFileError
from driftline.streams.config.model_config import ReferenceConfig, ResolvedModelConfig
from driftline.streams.pipeline.decode import InvalidRecord, decode_prediction
from driftline.streams.pipeline.summarize import PredictionSummarizer, as_label, feature_columns
from driftline.streams.references.book import Reference

OUTPUTS = {"prediction_score": "score", "prediction_label": "label", "prediction_value": "value"}
TRUTH = "label"
SEGMENT = "segment."


@dataclass
class ReferenceRows:
    """The file's rows. ``truths`` (None: unknown) and ``segments`` are empty when the file has none;
    ``lines`` holds each row's line number in a .jsonl file, for error messages (tables count rows)."""

    ids: list[str]
    features: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    truths: list[Any] = field(default_factory=list)
    segments: list[dict[str, str]] = field(default_factory=list)
    lines: list[int] | None = None

    def where(self, i: int, name: str) -> str:
        return f"line {self.lines[i]}, field {name!r}" if self.lines is not None else f"row {i + 1}, column {name!r}"


def _missing(value: Any) -> bool:
    """No value: null, an empty cell (CSV strings come back as ""), or NaN (parquet floats)."""
    return value is None or value == "" or (type(value) is float and math.isnan(value))


def _split_truth(line: bytes) -> tuple[Any, bytes]:
    """A reference line's ground truth, and the prediction event without it for the contract's decoder."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, line  # the decoder names the problem
    if type(obj) is not dict or TRUTH not in obj:
        return None, line
    truth = obj.pop(TRUTH)
    return truth, orjson.dumps(obj)


def _read_jsonl(path: Path) -> ReferenceRows:
    ids, features, outputs, truths, segments, lines = [], [], [], [], [], []
    for line_no, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        truth, event = _split_truth(line)
        try:
            pred = decode_prediction(event)
        except InvalidRecord as exc:
            raise ReferenceFileError(f"{path}:{line_no}: {exc}") from None
        ids.append(pred.prediction_id)
        features.append(pred.features)
        outputs.append(pred.prediction.as_dict())
        truths.append(truth)
        segments.append(pred.segments)
        lines.append(line_no)
    return ReferenceRows(ids, features, outputs, truths, segments, lines)


def _segment(value: Any, row: int, name: str) -> str | None:
    if _missing(value):
        return None
    if type(value) is str:
        return value
    if type(value) in (int, float, bool):
        return as_label(value)
    raise ReferenceFileError(f"row {row + 1}, column {SEGMENT + name!r}: a segment must be a string or a number, "
                             f"got {type(value).__name__}")


def _read_table(path: Path) -> ReferenceRows:
    try:
        table = pq.read_table(path) if path.suffix.lower() == ".parquet" else pacsv.read_csv(path)
    except Exception as exc:
        raise ReferenceFileError(f"{path}: cannot read: {exc}") from None
    columns = table.to_pydict()
    n = table.num_rows
    ids = [str(v) for v in columns.pop("prediction_id", [f"ref-{i}" for i in range(n)])]
    outs = {OUTPUTS[c]: columns.pop(c) for c in list(columns) if c in OUTPUTS}
    truths = columns.pop(TRUTH, [])
    by_segment = {c.removeprefix(SEGMENT): columns.pop(c) for c in list(columns) if c.startswith(SEGMENT)}
    features = [{name: values[i] for name, values in columns.items()} for i in range(n)]
    outputs = [{k: v[i] for k, v in outs.items() if v[i] is not None} for i in range(n)]
    segments = [{name: s for name, values in by_segment.items() if (s := _segment(values[i], i, name)) is not None}
                for i in range(n)] if by_segment else []
    return ReferenceRows(ids, features, outputs, truths, segments)


def read_rows(path: Path) -> ReferenceRows:
    suffix = path.suffix.lower()
    if not path.exists():
        raise ReferenceFileError(f"{path}: no such file")
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix in (".csv", ".parquet"):
        return _read_table(path)
    raise ReferenceFileError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .csv or .parquet)")


def _class_truths(rows: ReferenceRows, classes: tuple[str, ...]) -> list[str | None]:
    out: list[str | None] = []
    for i, value in enumerate(rows.truths):
        if _missing(value):
            out.append(None)
            continue
        if type(value) not in (str, int, float, bool):
            raise ReferenceFileError(f"{rows.where(i, TRUTH)}: ground truth must be a string, number or boolean, "
                                     f"got {type(value).__name__}")
        name = as_label(value)
        if name not in classes:
            raise ReferenceFileError(f"{rows.where(i, TRUTH)}: {name!r} is not one of the classes the predictions "
                                     f"use {classes}")
        out.append(name)
    return out


def _true_values(rows: ReferenceRows) -> np.ndarray:
    out = np.full(len(rows.ids), np.nan)
    for i, value in enumerate(rows.truths):
        if _missing(value):
            continue
        if type(value) not in (int, float):
            raise ReferenceFileError(f"{rows.where(i, TRUTH)}: a regression's ground truth must be a number, "
                                     f"got {type(value).__name__} {value!r}")
        out[i] = value
    return out


def _segment_columns(rows: ReferenceRows, slices: tuple[str, ...] | None) -> dict[str, list[str | None]] | None:
    names: set[str] = set().union(*rows.segments)
    if slices is not None:  # as the summarize stage slices the model's windows
        names &= set(slices)
    return {name: [s.get(name) for s in rows.segments] for name in sorted(names)} or None


def build(rows: ReferenceRows, config: ReferenceConfig, types: Mapping[str, str] | None = None, *,
          windows: ResolvedModelConfig | None = None) -> tuple[ReferenceProfile, WindowSummary]:
    """Fit the profile on the rows and summarise the same rows, and their ground truth, against it.

    ``types``: the configured feature types, as the workers apply them. ``windows``: the model version's
    configuration; the reference summary is then made as its windows are (summary sizes, slices), so
    calibration bins and slices line up with theirs. Without it: the defaults.
    """
    if not rows.ids:
        raise ReferenceFileError("the reference file holds no rows")
    numeric, categorical = feature_columns(rows.features, types)
    categorical = {k: v for k, v in categorical.items() if k not in numeric}
    labels = [o.get("label") for o in rows.outputs]
    scores = [o.get("score") for o in rows.outputs]
    values = [o.get("value") for o in rows.outputs]
    classes = None
    kwargs: dict[str, Any] = {}
    if any(v is not None for v in labels):
        names = [None if v is None else as_label(v) for v in labels]
        classes = sorted({n for n in names if n is not None})
        if len(classes) == 2 and any(s is not None for s in scores):
            def mean_score(label: str) -> float:
                picked = [s for s, n in zip(scores, names, strict=True) if n == label and s is not None]
                return float(np.mean(picked)) if picked else -np.inf
            classes.sort(key=mean_score)
        kwargs["predicted"] = names
        if any(s is not None for s in scores):
            kwargs["scores"] = np.array([np.nan if s is None else s for s in scores], dtype=np.float64)
        if len(classes) < 2:
            classes = None
            kwargs = {}
    value_array = None
    if classes is None and any(v is not None for v in values):
        value_array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        kwargs = {"values": value_array}
    profile = ReferenceProfile.fit(numeric, categorical, classes=classes, n_bins=config.n_bins,
                                   values=value_array, max_categories=config.max_categories)
    config_for = None if windows is None else (lambda _model, _version: windows)
    summary = PredictionSummarizer(lambda *_: profile, config_for).new("", "", 0)
    segments = _segment_columns(rows, None if windows is None else windows.slices)
    summary.add_predictions(rows.ids, numeric, categorical, segments=segments, **kwargs)
    if all(_missing(t) for t in rows.truths):
        return profile, summary
    if summary.classifier is not None:
        summary.add_labels(labels=_class_truths(rows, summary.classifier.classes), predicted=kwargs["predicted"],
                           scores=kwargs.get("scores"), segments=segments)
    elif summary.regression is not None:
        summary.add_labels(values=value_array, true_values=_true_values(rows), segments=segments)
    else:
        raise ReferenceFileError(f"the file has ground truth ({TRUTH!r}) but no model output to judge it by: "
                                 "predicted labels of two or more classes, or prediction values")
    return profile, summary


def reference_from_file(path: Path, model_id: str, model_version: str, effective_from_ms: int,
                        config: ReferenceConfig, types: Mapping[str, str] | None = None, *,
                        windows: ResolvedModelConfig | None = None) -> Reference:
    rows = read_rows(path)
    try:
        profile, summary = build(rows, config, types, windows=windows)
    except ReferenceFileError as exc:
        raise ReferenceFileError(f"{path}: {exc}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Reference(model_id, model_version, f"file-{digest[:12]}", digest, f"file:{path.name}",
                     effective_from_ms, profile, summary)
