"""Which detectors a reference supports: a labelled file reference runs the label-relative ones; without labels
they are left out, and why is logged once per model version however often the detectors are built."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from driftline.detectors.calibration import CalibrationDrift
from driftline.detectors.findings import Finding
from driftline.detectors.performance_drop import PerformanceDrop
from driftline.detectors.slice_accuracy import SliceAccuracy
from driftline.detectors.summaries import WindowSummary
from driftline.streams.config.model_config import MonitoringConfig, ReferenceConfig
from driftline.streams.pipeline.evaluate import build_detectors
from driftline.streams.references.book import Reference
from driftline.streams.references.files import reference_from_file
from tests.streams.test_reference_files import rows, table

LABEL_RELATIVE = {CalibrationDrift, PerformanceDrop, SliceAccuracy}
CONFIG = MonitoringConfig.from_dict({"defaults": {"detectors": {"slices": {"baseline": "reference"}}}})


def reference(tmp_path: Path, labelled: bool) -> Reference:
    data = rows() if labelled else [{**r, "truth": None} for r in rows()]
    path = tmp_path / "ref.parquet"
    pq.write_table(table(data), path)
    return reference_from_file(path, "m", "1", 0, ReferenceConfig())


def window(ref: Reference, seed: int, sharpen: float = 1.0, eu_flip: float = 0.0) -> WindowSummary:
    """A window's label summary: the reference's model with its scores sharpened on the logit scale (same
    predicted labels, so the same accuracy), and a share ``eu_flip`` of region=eu's ground truth flipped."""
    rng = np.random.default_rng(seed)
    n = 3000
    p = rng.uniform(0.01, 0.99, size=n)
    region = rng.choice(["eu", "us", "asia"], size=n)
    truth = (rng.random(n) < p) ^ ((region == "eu") & (rng.random(n) < eu_flip))
    w = WindowSummary.empty(ref.profile)
    w.add_labels(labels=np.where(truth, "churn", "stay").tolist(),
                 predicted=np.where(p > 0.5, "churn", "stay").tolist(),
                 scores=1 / (1 + ((1 - p) / p) ** sharpen), segments={"region": region.tolist()})
    return w


def breached(findings: list[Finding]) -> set[str]:
    """metric|slice of the breached findings (a worst_slice may name its slice in the detail instead)."""
    return {f"{f.metric}|{f.slice or f.detail.get('slice', '')}" for f in findings if f.breached}


def test_a_labelled_file_reference_runs_the_label_relative_detectors(tmp_path: Path, caplog):
    ref = reference(tmp_path, labelled=True)
    assert ref.summary is not None
    with caplog.at_level(logging.WARNING, logger="driftline.evaluate"):
        detectors = [d for d in build_detectors(ref.summary, CONFIG.resolve(f"m-{uuid.uuid4()}", "1"))
                     if type(d) in LABEL_RELATIVE]
    assert {type(d) for d in detectors} == LABEL_RELATIVE and caplog.records == []

    def run(w: WindowSummary) -> list[Finding]:
        return [f for d in detectors for f in d.update(w)]

    calm = run(window(ref, 1))
    assert {f.metric for f in calm} >= {"accuracy", "f1_macro", "roc_auc", "calibration_hl", "slice_accuracy"}
    assert breached(calm) == set()
    assert breached(run(window(ref, 2, sharpen=3.0))) == {"calibration_hl|"}
    dropped = breached(run(window(ref, 3, eu_flip=0.3)))
    assert {"slice_accuracy|region=eu", "worst_slice|region=eu"} <= dropped
    assert not {"slice_accuracy|region=us", "slice_accuracy|region=asia"} & dropped


def test_without_labels_they_are_left_out_and_said_once_per_model_version(tmp_path: Path, caplog):
    ref = reference(tmp_path, labelled=False)
    assert ref.summary is not None
    model = f"m-{uuid.uuid4()}"
    with caplog.at_level(logging.WARNING, logger="driftline.evaluate"):
        for version in ("1", "1", "1", "2", "2"):
            built = build_detectors(ref.summary, CONFIG.resolve(model, version))
            assert not {type(d) for d in built} & LABEL_RELATIVE
    said = sorted((r.args[0], r.args[2]) for r in caplog.records)  # type: ignore[index]
    assert said == sorted((cls.__name__, v) for cls in LABEL_RELATIVE for v in ("1", "2"))
    text = caplog.text
    assert "CalibrationDrift not used for" in text and "scores and ground-truth labels" in text
    assert "PerformanceDrop not used for" in text and "baseline='reference' needs a reference with ground-truth" in text


@pytest.mark.parametrize(("cls", "kwargs"), [(CalibrationDrift, {}), (PerformanceDrop, {}),
                                           (SliceAccuracy, {"baseline": "reference"})])
def test_label_relative_detectors_refuse_an_unlabelled_reference(tmp_path: Path, cls: type, kwargs: dict):
    with pytest.raises(ValueError, match="ground-truth labels"):
        cls(reference(tmp_path, labelled=False).summary, **kwargs)
    cls(reference(tmp_path, labelled=True).summary, **kwargs)
