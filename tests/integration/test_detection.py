"""References and detectors in the running pipeline: a stored reference from a file, and an automatic one."""

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
MODEL, VERSION = "churn", "2"


def event(pid: str, ts: int, rng: np.random.Generator, shift: float) -> dict:
    tenure = float(rng.normal(24.0 + shift * 8.0, 8.0))
    score = float(1 / (1 + np.exp(-(tenure - 24.0) / 8.0)))
    return {"schema_version": 1, "prediction_id": pid, "model_id": MODEL, "model_version": VERSION, "ts": ts,
            "features": {"tenure": tenure, "spend": float(rng.lognormal(3.0, 0.5)),
                         "plan": str(rng.choice(["basic", "plus", "pro"], p=[0.5, 0.3, 0.2]))},
            "prediction": {"score": score, "label": "churn" if score > 0.5 else "stay"},
            "segments": {"region": str(rng.choice(["eu", "us"]))}}


def produce_windows(bootstrap: str, topic: str, n_windows: int, per_window: int, shifted_from: int,
                    seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    producer = outside_producer(bootstrap)
    for w in range(n_windows):
        shift = 1.0 if w >= shifted_from else 0.0
        for i in range(per_window):
            ts = BASE_MS + w * 60_000 + i * 60_000 // per_window
            pid = f"w{w}-{i}"
            producer.produce(topic, key=pid.encode(), value=orjson.dumps(event(pid, ts, rng, shift)))
        producer.poll(0)
    assert producer.flush(60) == 0


def set_stored_reference(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`driftline reference set` from a file of 8,000 unshifted events, as a user would run it."""
    rng = np.random.default_rng(99)
    reference = tmp_path / "reference.jsonl"
    reference.write_bytes(b"\n".join(orjson.dumps(event(f"ref-{i}", BASE_MS, rng, 0.0)) for i in range(8000)))
    done = subprocess.run([sys.executable, "-m", "driftline.streams", "reference", "set", "--model", MODEL, "--version",
                           VERSION, "--file", str(reference), "--effective-from", "0"],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done


def drift_rows(url: str) -> dict[int, dict[str, tuple[int, str, str]]]:
    """window index -> metric|feature -> (breached, reference_id, config_version)"""
    with store.opened(url) as client:
        _, rows = store.query(client, "SELECT toUnixTimestamp64Milli(window_start), metric, feature, breached, "
                                      "reference_id, config_version FROM driftline.windows FINAL")
    out: dict[int, dict[str, tuple[int, str, str]]] = {}
    for start, metric, feature, breached, ref, cfg in rows:
        out.setdefault((int(start) - BASE_MS) // 60_000, {})[f"{metric}|{feature}"] = (int(breached), ref, cfg)
    return out


def test_a_stored_reference_flags_the_drifted_windows_only(env_for, worker_for, tmp_path: Path):
    # MMD's permutation p-value cannot reach the false-alarm budget's level: it runs with its alpha set.
    config = tmp_path / "monitoring.yaml"
    config.write_text("defaults:\n  detectors: {multivariate: {mmd: {alpha: 0.01}}}\n")
    env = env_for(window_seconds=60, allowed_lateness_seconds=5, monitoring_config=config)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    done = set_stored_reference(env, tmp_path)
    assert "reference file-" in done.stdout
    produce_windows(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), 6, 3000, shifted_from=3)
    worker = worker_for(env).start()
    worker.wait_metric("driftline_windows_written_total", 6)
    assert worker.terminate() == 0
    rows = drift_rows(settings.clickhouse_url)
    assert sorted(rows) == list(range(6))
    for w in range(6):
        assert rows[w]["ks|tenure"][1].startswith("file-") and rows[w]["ks|tenure"][2]
        assert rows[w]["ks|tenure"][0] == (1 if w >= 3 else 0), w
        assert rows[w]["ks|spend"][0] == 0
        assert rows[w]["chi2|plan"][0] == 0
        assert rows[w]["prediction_drift|score"][0] == (1 if w >= 3 else 0), w
        assert rows[w]["mmd|"][0] == (1 if w >= 3 else 0), w
    with store.opened(settings.clickhouse_url) as client:
        _, refs = store.query(client, "SELECT reference_id, source, length(summary) > 0 FROM driftline.references")
    assert refs == [(rows[0]["ks|tenure"][1], "file:reference.jsonl", 1)]


def test_an_automatic_reference_is_learned_from_the_first_windows(env_for, worker_for, tmp_path: Path):
    """Live traffic (event time = now) in 2-second windows; the tenure shift starts at the 9th window."""
    config = tmp_path / "monitoring.yaml"
    config.write_text("defaults:\n  reference: {source: auto, windows: 1}\n")
    env = env_for(window_seconds=2, allowed_lateness_seconds=0.5, monitoring_config=config)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    worker = worker_for(env).start()
    worker.wait_metric("driftline_stage2_watermark_seconds", 1)
    rng = np.random.default_rng(5)
    producer = outside_producer(settings.kafka_bootstrap)
    first = int(time.time() * 1000) // 2000 + 1
    while time.time() * 1000 < first * 2000:
        time.sleep(0.01)
    shifted_from = first + 8
    i = 0
    while (now := int(time.time() * 1000)) < (first + 12) * 2000:
        pid = f"live-{i}"
        shift = 1.0 if now // 2000 >= shifted_from else 0.0
        producer.produce(settings.topic(topics.PREDICTIONS), key=pid.encode(),
                         value=orjson.dumps(event(pid, now, rng, shift)))
        i += 1
        if i % 100 == 0:
            producer.poll(0)
            time.sleep(0.05)
    assert producer.flush(30) == 0
    worker.wait_metric("driftline_stage2_watermark_seconds", (first + 12) * 2)
    assert worker.terminate() == 0
    with store.opened(settings.clickhouse_url) as client:
        _, rows = store.query(client, "SELECT intDiv(toUnixTimestamp64Milli(window_start), 2000), breached, "
                                      "reference_id FROM driftline.windows FINAL "
                                      "WHERE metric = 'ks' AND feature = 'tenure' ORDER BY 1")
    judged = {int(w): (int(b), ref) for w, b, ref in rows}
    assert all(ref.startswith("auto-") for _, ref in judged.values())
    assert min(judged) >= first + 4  # profile from the first window, reference data from the 4th
    assert {w for w, (b, _) in judged.items() if b} == {w for w in judged if w >= shifted_from}
    assert any(w < shifted_from for w in judged) and any(w >= shifted_from for w in judged)
