"""``driftline demo``: the whole loop on the embedded defaults, from a cold start to rows on the screen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable

import numpy as np

from serving import Monitor
from streams import store, topics
from streams.kafka_local import LocalBroker, free_port
from streams.settings import Settings

MODEL = "demo-credit"


def _metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def produce(settings: Settings, n: int, start_ms: int, span_ms: int, seed: int = 7) -> set[int]:
    """n synthetic credit-risk predictions; the last third sees older applicants and larger amounts."""
    rng = np.random.default_rng(seed)
    monitor = Monitor(settings.kafka_bootstrap, model_id=MODEL, model_version="1",
                      topic_prefix=settings.topic_prefix)
    windows = set()
    size_ms = settings.window_seconds * 1000
    run = uuid.uuid4().hex[:8]
    for i in range(n):
        ts = start_ms + i * span_ms // n
        shifted = i > 2 * n // 3
        features = {
            "age": float(rng.normal(48 if shifted else 40, 12)),
            "amount": float(rng.lognormal(8.4 if shifted else 8.0, 0.6)),
            "income": None if rng.random() < 0.05 else float(rng.lognormal(10.5, 0.4)),
            "country": str(rng.choice(["FR", "DE", "ES", "IT"])),
        }
        score = float(1 / (1 + np.exp(-(features["age"] - 45) / 10)))
        monitor.log_prediction(f"demo-{run}-{i}", features, score=score,
                               label="default" if score > 0.5 else "repaid", ts=ts,
                               segments={"channel": str(rng.choice(["web", "branch"]))})
        windows.add(ts - ts % size_ms)
    monitor.close(60)
    return windows


def run_demo(settings: Settings, n: int = 50_000, echo: Callable[[str], None] = print) -> int:
    broker = LocalBroker(settings.home, settings.kafka_port, settings.kafka_heap)
    echo(broker.up().describe())
    topics.ensure_topics(settings)
    port = free_port()
    env = {**os.environ, "DRIFTLINE_METRICS_PORT": str(port), "DRIFTLINE_IDLE_PARTITION_SECONDS": "1",
           "DRIFTLINE_KAFKA_BOOTSTRAP": broker.bootstrap, "DRIFTLINE_HOME": str(settings.home),
           "DRIFTLINE_CLICKHOUSE_URL": settings.clickhouse_url}
    log_path = settings.home / "demo-worker.log"
    with log_path.open("ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        span_ms = 6 * settings.window_seconds * 1000
        start_ms = int(time.time() * 1000) - span_ms - 2 * settings.window_seconds * 1000
        echo(f"producing {n} predictions of model {MODEL!r} over {span_ms // 1000} s of event time ...")
        windows = produce(settings, n, start_ms, span_ms)
        before = _metric(port, "driftline_windows_written_total")
        echo(f"waiting for the worker to close {len(windows)} windows (log: {log_path}) ...")
        deadline = time.monotonic() + 180
        while _metric(port, "driftline_windows_written_total") - before < len(windows):
            if worker.poll() is not None or time.monotonic() > deadline:
                echo(f"the worker did not finish; see {log_path}")
                return 1
            time.sleep(0.5)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    with store.opened(settings.clickhouse_url) as client:
        columns, rows = store.query(client, (
            "SELECT window_start, metric, feature, round(value, 3) AS value, n FROM driftline.windows FINAL "
            f"WHERE model_id = '{MODEL}' AND window_start >= fromUnixTimestamp64Milli({start_ms - 60_000}) "
            "AND (feature IN ('', 'age', 'amount') ) AND slice = '' ORDER BY window_start, metric, feature"))
    echo("\t".join(columns))
    for row in rows:
        echo("\t".join(str(v) for v in row))
    echo("query more with: driftline sql \"SELECT * FROM driftline.windows FINAL LIMIT 10\"")
    return 0
