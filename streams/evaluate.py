"""Run a model version's enabled detectors on a merged window against its reference.

Each detector family keeps its own false-alarm control (see detectors/README.md); the families a window
runs are those its configuration enables and its data supports (labels, classifier outputs, a sample).
"""

from __future__ import annotations

import logging
from typing import Any

from detectors.calibration import CalibrationDrift
from detectors.drift import UnivariateDrift
from detectors.findings import Detector, Finding
from detectors.multivariate import MMDDrift, PCAReconstructionDrift
from detectors.performance import EstimatedAccuracy, PerformanceDrop
from detectors.quality import MissingRateDetector, OutOfRangeDetector, TypeErrorDetector, UnseenCategoryDetector
from detectors.slices import SliceAccuracy
from detectors.summaries import WindowSummary
from streams.model_config import ResolvedModelConfig

log = logging.getLogger("driftline.evaluate")


def build_detectors(reference: WindowSummary, config: ResolvedModelConfig) -> list[Any]:
    d = config.detectors
    q = d.quality
    chosen: list[tuple[bool, type, dict[str, Any]]] = [
        (d.drift.enabled, UnivariateDrift, d.drift.kwargs()),
        (q.missing.enabled, MissingRateDetector, q.missing.kwargs()),
        (q.out_of_range.enabled, OutOfRangeDetector, q.out_of_range.kwargs()),
        (q.unseen.enabled, UnseenCategoryDetector, q.unseen.kwargs()),
        (q.type_errors.enabled, TypeErrorDetector, q.type_errors.kwargs()),
    ]
    if len(reference.reservoir.feature_names) >= 2 and reference.reservoir.hashes.size >= 50:
        chosen += [(d.multivariate.mmd.enabled, MMDDrift, d.multivariate.mmd.kwargs()),
                   (d.multivariate.pca.enabled, PCAReconstructionDrift, d.multivariate.pca.kwargs())]
    if reference.classifier is not None or reference.regression is not None:
        chosen.append((d.performance.drop.enabled, PerformanceDrop, d.performance.drop.kwargs()))
    if reference.classifier is not None:
        chosen += [(d.performance.estimated_accuracy.enabled, EstimatedAccuracy,
                    d.performance.estimated_accuracy.kwargs()),
                   (d.calibration.enabled, CalibrationDrift, d.calibration.kwargs()),
                   (d.slices.enabled, SliceAccuracy, d.slices.kwargs())]
    detectors = []
    for enabled, cls, kwargs in chosen:
        if not enabled:
            continue
        try:
            detectors.append(cls(reference, **kwargs))
        except ValueError as exc:
            log.warning("%s not used for %s/%s: %s", cls.__name__, config.model_id, config.model_version, exc)
    return detectors


class ModelEvaluator:
    """The detectors of one model version, built once per (reference, configuration version)."""

    def __init__(self, reference: WindowSummary, config: ResolvedModelConfig) -> None:
        self.config = config
        self.detectors: list[Detector] = build_detectors(reference, config)

    def evaluate(self, summary: WindowSummary) -> list[Finding]:
        findings: list[Finding] = []
        for detector in self.detectors:
            try:
                findings += detector.update(summary)
            except (ValueError, ArithmeticError) as exc:
                log.error("%s failed on a window of %s: %s", type(detector).__name__, self.config.model_id, exc)
        return findings
