"""``driftline demo``: the whole loop on the embedded defaults, from a cold start to rows on the screen.

Each run is a new version of the demo model on topics of its own, so runs can follow each other: a second
run's backdated events would otherwise be late against the first run's committed event time, and its
windows would share the first run's identity in ClickHouse.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson

from driftline.serving import Monitor
from driftline.streams import store
from driftline.streams.config.model_config import ReferenceConfig
from driftline.streams.config.settings import Settings
from driftline.streams.kafka import topics
from driftline.streams.kafka.local_broker import LocalBroker, free_port
from driftline.streams.references import topic as references
from driftline.streams.references.files import reference_from_file

MODEL = "demo-credit"


def _metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@dataclass
class _Prediction:
    features: dict[str, float | str | None]
    score: float
    label: str
    channel: str

    def truth(self, rng: np.random.Generator) -> str:
        """The label that later lands: the model is right 85 % of the time, else the loan was repaid."""
        return self.label if rng.random() < 0.85 else "repaid"

    def event(self, pid: str, ts: int, version: str) -> dict[str, object]:
        return {"schema_version": 1, "prediction_id": pid, "model_id": MODEL, "model_version": version, "ts": ts,
                "features": self.features, "prediction": {"score": self.score, "label": self.label},
                "segments": {"channel": self.channel}}


def _predict(rng: np.random.Generator, shifted: bool) -> _Prediction:
    age = float(rng.normal(48 if shifted else 40, 12))
    features: dict[str, float | str | None] = {
        "age": age,
        "amount": float(rng.lognormal(8.4 if shifted else 8.0, 0.6)),
        "income": None if rng.random() < 0.05 else float(rng.lognormal(10.5, 0.4)),
        "country": str(rng.choice(["FR", "DE", "ES", "IT"])),
    }
    score = float(1 / (1 + np.exp(-(age - 45) / 10)))
    return _Prediction(features, score, "default" if score > 0.5 else "repaid", str(rng.choice(["web", "branch"])))


def publish_reference(settings: Settings, version: str, n: int = 10_000) -> str:
    """The model's reference: 10k labelled predictions from before the change, as a user would pass a file."""
    rng = np.random.default_rng(1)
    path = settings.home / "demo-reference.jsonl"
    rows = []
    for i in range(n):
        p = _predict(rng, False)
        rows.append(orjson.dumps({**p.event(f"ref-{i}", 0, version), "label": p.truth(rng)}))
    path.write_bytes(b"\n".join(rows))
    ref = reference_from_file(path, MODEL, version, 0, ReferenceConfig())
    topics.ensure_topics(settings)
    references.publish(settings, ref)
    return ref.reference_id


def produce(settings: Settings, version: str, n: int, start_ms: int, span_ms: int, seed: int = 7) -> set[int]:
    """n predictions (the last third drifts: older applicants, larger amounts), then labels for 60 %."""
    rng = np.random.default_rng(seed)
    windows = set()
    size_ms = settings.window_seconds * 1000
    labelled = []
    with Monitor(settings.kafka_bootstrap, model_id=MODEL, model_version=version,
                 topic_prefix=settings.topic_prefix) as monitor:
        for i in range(n):
            ts = start_ms + i * span_ms // n
            pid = f"demo-{version}-{i}"
            p = _predict(rng, shifted=i > 2 * n // 3)
            monitor.log_prediction(pid, p.features, score=p.score, label=p.label, ts=ts,
                                   segments={"channel": p.channel})
            windows.add(ts - ts % size_ms)
            if rng.random() < 0.6:
                labelled.append((pid, p.truth(rng), ts))
        for pid, truth, ts in labelled:
            monitor.log_label(pid, truth, ts=ts + 1000)
        monitor.close(60)  # flush with the demo's patience; leaving the block closes nothing more
    return windows




def run_demo(settings: Settings, n: int = 50_000, echo: Callable[[str], None] = print) -> int:
    broker = LocalBroker(settings.home, settings.kafka_port, settings.kafka_heap)
    echo(broker.up().describe())
    version = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:4]
    settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}demo-{version}.",
                                           "consumer_group": f"{settings.consumer_group}-demo-{version}",
                                           "kafka_bootstrap": broker.bootstrap})
    topics.ensure_topics(settings)
    echo(f"reference {publish_reference(settings, version)} published for {MODEL!r} version {version!r} "
         "(10,000 predictions)")
    port = free_port()
    env = {**os.environ, "DRIFTLINE_METRICS_PORT": str(port), "DRIFTLINE_IDLE_PARTITION_SECONDS": "1",
           "DRIFTLINE_KAFKA_BOOTSTRAP": broker.bootstrap, "DRIFTLINE_HOME": str(settings.home),
           "DRIFTLINE_CLICKHOUSE_URL": settings.clickhouse_url, "DRIFTLINE_LABEL_WAIT_SECONDS": "5",
           "DRIFTLINE_TOPIC_PREFIX": settings.topic_prefix, "DRIFTLINE_CONSUMER_GROUP": settings.consumer_group}
    log_path = settings.home / "demo-worker.log"
    with log_path.open("ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "driftline.streams", "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        size_ms = settings.window_seconds * 1000
        span_ms = 6 * size_ms
        # window-aligned, so the six windows are full: a last window of a handful of events judges nothing
        start_ms = (int(time.time() * 1000) - span_ms - 2 * size_ms) // size_ms * size_ms
        echo(f"producing {n} predictions over {span_ms // 1000} s of event time, the last third drifting, "
             "and labels for 60 % of them ...")
        windows = produce(settings, version, n, start_ms, span_ms)
        echo(f"waiting for the worker to close {len(windows)} windows and join the labels (log: {log_path}) ...")
        deadline = time.monotonic() + 180
        while (_metric(port, "driftline_windows_written_total") < len(windows)
               or _metric(port, "driftline_labels_joined_total") < 0.5 * n):
            if worker.poll() is not None or time.monotonic() > deadline:
                echo(f"the worker did not finish; see {log_path}")
                return 1
            time.sleep(0.5)
        time.sleep(2)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    with store.opened(settings.clickhouse_url) as client:
        columns, rows = store.demo_summary(client, MODEL, version)
        alerts = store.alert_transitions(client, MODEL, version)
    for at, transition, policy, severity, summary, actions in alerts:
        requested = ", ".join(a["kind"] for a in orjson.loads(actions))
        echo(f"alert {transition} at {at:%H:%M:%S}: {policy} ({severity}){f' + {requested}' if requested else ''}: "
             f"{summary}")
    echo("\t".join(columns))
    for row in rows:
        echo("\t".join(str(v) for v in row))
    echo("every metric: driftline sql \"SELECT metric, feature, value, breached, p_value FROM driftline.windows "
         "FINAL ORDER BY window_start DESC LIMIT 50\"")
    return 0
