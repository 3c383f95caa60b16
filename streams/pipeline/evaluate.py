"""Run a model version's enabled detectors on a merged window against its reference.

Each detector family keeps its own false-alarm control (see detectors/README.md); the families a window
runs are those its configuration enables and its data supports (labels, classifier outputs, a sample).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from driftline.detectors.calibration import CalibrationDrift
from driftline.detectors.drift import UnivariateDrift
from driftline.detectors.estimated_accuracy import EstimatedAccuracy
from driftline.detectors.findings import Detector, Finding
from driftline.detectors.multivariate import MMDDrift, PCAReconstructionDrift
from driftline.detectors.performance_drop import PerformanceDrop
from driftline.detectors.quality import (
    MissingRateDetector,
    OutOfRangeDetector,
    TypeErrorDetector,
    UnseenCategoryDetector,
)
from driftline.detectors.slice_accuracy import SliceAccuracy
from driftline.detectors.summaries import WindowSummary
from driftline.streams.config.model_config import ResolvedModelConfig

log = logging.getLogger("driftline.evaluate")


class CapabilityLog:
    """Says once per (model, version, detector) and process why a detector cannot run for a model version.

    Detectors are built again for every window and, in the merge stage, every time labels land; what a reference
    lacks does not change between those builds, so saying it once per model version is enough.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._said: set[tuple[str, str, str]] = set()

    def missing(self, config: ResolvedModelConfig, detector: str, reason: str) -> None:
        key = (config.model_id, config.model_version, detector)
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        log.warning("%s not used for %s/%s: %s (logged once per model version)", detector, config.model_id,
                    config.model_version, reason)


CAPABILITIES = CapabilityLog()


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
            CAPABILITIES.missing(config, cls.__name__, str(exc))
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
