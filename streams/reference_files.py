"""``driftline reference set``: turn a file of reference predictions into a published reference.

Accepted files: ``.jsonl`` of prediction events (schemas/prediction.v1.json, e.g. a dump of the topic),
or a table (``.csv``, ``.parquet``) with one column per feature plus the optional output columns
``prediction_score``, ``prediction_label``, ``prediction_value`` (and ``prediction_id``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from detectors.reference import ReferenceProfile
from detectors.summaries import WindowSummary
from streams.decode import InvalidRecord, decode_prediction
from streams.model_config import ReferenceConfig
from streams.references import Reference
from streams.summarize import as_label, feature_columns

OUTPUTS = {"prediction_score": "score", "prediction_label": "label", "prediction_value": "value"}


class ReferenceFileError(ValueError):
    """The reference file cannot be read or holds no usable rows; the message says which and where."""


@dataclass
class ReferenceRows:
    ids: list[str]
    features: list[dict[str, Any]]
    outputs: list[dict[str, Any]]


def read_rows(path: Path) -> ReferenceRows:
    suffix = path.suffix.lower()
    if not path.exists():
        raise ReferenceFileError(f"{path}: no such file")
    if suffix == ".jsonl":
        ids, features, outputs = [], [], []
        for line_no, line in enumerate(path.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                pred = decode_prediction(line)
            except InvalidRecord as exc:
                raise ReferenceFileError(f"{path}:{line_no}: {exc}") from None
            ids.append(pred.prediction_id)
            features.append(pred.features)
            outputs.append(pred.prediction.as_dict())
        return ReferenceRows(ids, features, outputs)
    if suffix in (".csv", ".parquet"):
        try:
            table = pq.read_table(path) if suffix == ".parquet" else pacsv.read_csv(path)
        except Exception as exc:
            raise ReferenceFileError(f"{path}: cannot read: {exc}") from None
        columns = table.to_pydict()
        n = table.num_rows
        ids = [str(v) for v in columns.pop("prediction_id", [f"ref-{i}" for i in range(n)])]
        outs = {OUTPUTS[c]: columns.pop(c) for c in list(columns) if c in OUTPUTS}
        features = [{name: values[i] for name, values in columns.items()} for i in range(n)]
        outputs = [{k: v[i] for k, v in outs.items() if v[i] is not None} for i in range(n)]
        return ReferenceRows(ids, features, outputs)
    raise ReferenceFileError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .csv or .parquet)")


def build(rows: ReferenceRows, config: ReferenceConfig, types: Mapping[str, str] | None = None
          ) -> tuple[ReferenceProfile, WindowSummary]:
    """Fit the profile on the rows and summarise the same rows against it (``types``: the configured
    feature types, as the workers apply them)."""
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
    summary = WindowSummary.empty(profile)
    summary.add_predictions(rows.ids, numeric, categorical, **kwargs)
    return profile, summary


def reference_from_file(path: Path, model_id: str, model_version: str, effective_from_ms: int,
                        config: ReferenceConfig, types: Mapping[str, str] | None = None) -> Reference:
    profile, summary = build(read_rows(path), config, types)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Reference(model_id, model_version, f"file-{digest[:12]}", digest, f"file:{path.name}",
                     effective_from_ms, profile, summary)

