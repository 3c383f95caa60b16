"""A reference file with ground truth, end to end: `driftline reference set` publishes a labelled .csv, and the
worker judges delayed labels against it: calibration_hl flags an over-confident model (same predicted labels,
so the same accuracy, but sharper scores), slice_accuracy flags the one region whose accuracy drops. A model
version whose reference file has no labels gets the plain accuracy, and its worker says once why the
label-relative detectors do not run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from driftline.streams import store
from driftline.streams.kafka import topics
from tests.conftest import ROOT, settings_of
from tests.integration.synthetic import outside_producer

pytestmark = pytest.mark.integration
BASE_MS = 1_767_225_600_000
MODEL, LABELLED, UNLABELLED = "churn", "1", "2"
CALM, SHARP, EU_DROP = 0, 1, 2  # window indexes
PER_WINDOW = {LABELLED: 3000, UNLABELLED: 300}
REGIONS = ["eu", "us", "asia"]
# Only the label-relative detectors matter here; slices are judged against the reference's own slices.
CONFIG = """defaults:
  detectors:
    drift: {enabled: false}
    multivariate: {mmd: {enabled: false}, pca: {enabled: false}}
    slices: {baseline: reference}
"""


def outcome(rng: np.random.Generator, sharpen: float, eu_flip: float) -> tuple[float, str, str, str]:
    """(score, predicted label, true label, region): the model's score is calibrated unless ``sharpen`` != 1,
    which pushes it away from 0.5 on the logit scale without changing the predicted label; a share ``eu_flip``
    of region=eu's ground truth is flipped."""
    p = float(rng.uniform(0.01, 0.99))
    region = str(rng.choice(REGIONS))
    truth = bool(rng.random() < p) != bool(region == "eu" and rng.random() < eu_flip)
    score = 1 / (1 + ((1 - p) / p) ** sharpen)
    return score, "churn" if p > 0.5 else "stay", "churn" if truth else "stay", region


def write_reference(path: Path, labelled: bool, n: int = 4000) -> Path:
    rng = np.random.default_rng(21)
    lines = ["tenure,prediction_score,prediction_label,segment.region" + (",label" if labelled else "")]
    for _ in range(n):
        score, predicted, truth, region = outcome(rng, 1.0, 0.0)
        lines.append(f"{rng.normal(24, 8)!r},{score!r},{predicted},{region}" + (f",{truth}" if labelled else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def publish(env: dict[str, str], version: str, file: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "driftline.streams", "reference", "set", "--model", MODEL,
                           "--version", version, "--file", str(file), "--effective-from", "0"],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def traffic(version: str) -> tuple[list[dict], list[dict]]:
    """Three one-minute windows of predictions (calm, over-confident, region=eu worse) and every one's label."""
    rng = np.random.default_rng(int(version))
    preds, labels = [], []
    for w, (sharpen, eu_flip) in enumerate([(1.0, 0.0), (3.0, 0.0), (1.0, 0.35)]):
        for i in range(PER_WINDOW[version]):
            ts = BASE_MS + w * 60_000 + i * 60_000 // PER_WINDOW[version]
            pid = f"{version}-w{w}-{i}"
            score, predicted, truth, region = outcome(rng, sharpen, eu_flip)
            preds.append({"schema_version": 1, "prediction_id": pid, "model_id": MODEL, "model_version": version,
                          "ts": ts, "features": {"tenure": float(rng.normal(24, 8))},
                          "prediction": {"score": score, "label": predicted}, "segments": {"region": region}})
            labels.append({"schema_version": 1, "prediction_id": pid, "model_id": MODEL, "ts": ts + 1000,
                           "label": truth})
    return preds, labels


def produce(bootstrap: str, topic: str, events: list[dict]) -> None:
    producer = outside_producer(bootstrap)
    for e in events:
        producer.produce(topic, key=e["prediction_id"].encode(), value=orjson.dumps(e))
    assert producer.flush(60) == 0


def judged(url: str) -> dict[tuple[str, int, str, str], tuple[int, float | None, str]]:
    """(version, window, metric, slice) -> (breached, threshold, reference_id), latest revision."""
    with store.opened(url) as client:
        _, rows = store.query(client, "SELECT model_version, intDiv(toUnixTimestamp64Milli(window_start) - {b:Int64}, "
                                      "60000), metric, slice, breached, threshold, reference_id "
                                      "FROM driftline.windows FINAL WHERE metric IN "
                                      "('accuracy', 'calibration_hl', 'slice_accuracy', 'labels')", {"b": BASE_MS})
    return {(v, int(w), m, s): (int(b), t, ref) for v, w, m, s, b, t, ref in rows}


def test_a_labelled_reference_file_flags_over_confidence_and_a_worse_slice(env_for, worker_for, tmp_path: Path):
    config = tmp_path / "monitoring.yaml"
    config.write_text(CONFIG)
    env = env_for(window_seconds=60, allowed_lateness_seconds=5, label_wait_seconds=1, monitoring_config=config)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    assert "(4000 with ground truth)" in publish(env, LABELLED, write_reference(tmp_path / "ref.csv", True))
    assert "(0 with ground truth)" in publish(env, UNLABELLED, write_reference(tmp_path / "plain.csv", False))
    (preds, labels), (plain_preds, plain_labels) = traffic(LABELLED), traffic(UNLABELLED)
    # In event-time order: a version's records behind the other's would be late.
    produce(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), sorted(preds + plain_preds,
                                                                                 key=lambda e: e["ts"]))

    worker = worker_for(env).start()
    worker.wait_metric("driftline_windows_written_total", 6)
    # After the predictions are joinable, so no label waits out DRIFTLINE_LABEL_WAIT_SECONDS unmatched.
    produce(settings.kafka_bootstrap, settings.topic(topics.LABELS), labels + plain_labels)
    worker.wait_metric("driftline_labels_joined_total", len(labels) + len(plain_labels))
    time.sleep(2.0)
    assert worker.terminate() == 0

    rows = judged(settings.clickhouse_url)
    for w in (CALM, SHARP, EU_DROP):
        assert rows[(LABELLED, w, "labels", "")][0] == 0
        breached, threshold, ref = rows[(LABELLED, w, "accuracy", "")]
        assert ref.startswith("file-") and threshold is not None  # tested against the file's accuracy
        assert breached == (w == EU_DROP), w  # the region drags the whole window down too
        # SHARP: same accuracy, sharper scores; EU_DROP: flipped truths leave region=eu's scores miscalibrated too
        assert rows[(LABELLED, w, "calibration_hl", "")][0] == (w != CALM), w
        slices = {s: b for (v, win, m, s), (b, _, _) in rows.items() if (v, win, m) == (LABELLED, w, "slice_accuracy")}
        assert slices == {f"region={r}": int(w == EU_DROP and r == "eu") for r in REGIONS}, w

    plain = {(w, m): v for (version, w, m, _), v in rows.items() if version == UNLABELLED}
    assert {m for _, m in plain} == {"labels", "accuracy"}
    assert all(plain[(w, "accuracy")][1] is None for w in (CALM, SHARP, EU_DROP))  # reported, not tested
    log = worker.log.read_text()
    for detector in ("CalibrationDrift", "PerformanceDrop", "SliceAccuracy"):
        assert log.count(f"{detector} not used for {MODEL}/{UNLABELLED}:") == 1, log[-3000:]
        assert f"{detector} not used for {MODEL}/{LABELLED}:" not in log
