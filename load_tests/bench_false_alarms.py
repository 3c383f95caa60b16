"""False alarms of the window-level detectors under the model's false-alarm budget, through the real pipeline.

A classifier (8 numeric features, one categorical, one boolean, two segment attributes, probabilities, every
label joined) with a stored reference of the same distribution gets stationary traffic through the broker and
a `driftline worker`: version "1" at the default budget (one false alarm per 30 days, so none is expected),
version "2" with the budget scaled (``days`` shrunk) so that ~10 false alarms are expected over its windows.
Per version and family: windows judged, windows breached, the expected count (the family's budgeted level x
windows) and whether the observed count lies within the Poisson 99 % interval (0 counts as within for a
family that is conservative; the budget is a bound). `python -m load_tests --only false_alarms`;
``BENCH_FALSE_ALARM_EVENTS`` (default 1,000,000 per version) sets the size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from scipy import stats

from driftline.streams import store
from driftline.streams.config.model_config import WINDOW_BUDGET_KNOBS, MonitoringConfig
from driftline.streams.config.settings import load_settings
from driftline.streams.kafka import topics
from driftline.streams.kafka.local_broker import free_port
from driftline.streams.pipeline.evaluate import plan_budget
from load_tests.scrape import scrape_metric

ROOT = Path(__file__).resolve().parent.parent
MODEL = "fa-classifier"
BASE_MS = 1_767_225_600_000
WINDOW_S = 60
PER_WINDOW = 2_000
N_EVENTS = int(os.environ.get("BENCH_FALSE_ALARM_EVENTS", "1000000"))
TARGET = 10.0  # expected false alarms of the scaled version
NUMERIC = [f"f{i}" for i in range(8)]
WEIGHTS = np.array([0.9, -0.7, 0.5, 0.0, 0.3, -0.2, 0.0, 0.4])
# metric -> family (as `streams.pipeline.evaluate.FAMILIES`); type_errors is a tolerance, not counted.
FAMILY_OF = {
    "ks": "drift", "chi2": "drift", "prediction_drift": "drift", "missing_rate": "quality.missing",
    "out_of_range_rate": "quality.out_of_range", "unseen_category_rate": "quality.unseen", "mmd": "multivariate.mmd",
    "pca_reconstruction_error": "multivariate.pca", "accuracy": "performance.drop", "f1_macro": "performance.drop",
    "roc_auc": "performance.drop", "estimated_accuracy": "performance.estimated_accuracy",
    "calibration_hl": "calibration", "slice_accuracy": "slices", "worst_slice": "slices",
}


def traffic(version: str, n: int, seed: int, start_ms: int = BASE_MS) -> Iterator[tuple[dict[str, Any], str]]:
    """n stationary prediction events of version `version` at PER_WINDOW per window, each with its true label."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8))
    x[:, 1] = 0.6 * x[:, 0] + 0.8 * x[:, 1]  # some correlation for the multivariate detectors
    x[rng.random(n) < 0.02, 3] = np.nan
    p = 1 / (1 + np.exp(-(np.nan_to_num(x) @ WEIGHTS)))
    truth = rng.random(n) < p
    plan = rng.choice(["basic", "plus", "pro", "team"], n, p=[0.5, 0.3, 0.15, 0.05])
    flag = rng.random(n) < 0.3
    region = rng.choice(["north", "south", "east", "west"], n)
    device = rng.choice(["ios", "android", "web"], n)
    step = WINDOW_S * 1000 / PER_WINDOW
    for i in range(n):
        features: dict[str, Any] = {name: None if np.isnan(v) else float(v)
                                    for name, v in zip(NUMERIC, x[i], strict=True)}
        features.update(plan=str(plan[i]), flagged=bool(flag[i]))
        yes = float(p[i])
        yield {"schema_version": 1, "prediction_id": f"{version}-{seed}-{i}", "model_id": MODEL,
               "model_version": version, "ts": start_ms + int(i * step), "features": features,
               "prediction": {"score": yes, "label": "yes" if yes > 0.5 else "no",
                              "probabilities": {"no": 1 - yes, "yes": yes}},
               "segments": {"region": str(region[i]), "device": str(device[i])}}, "yes" if truth[i] else "no"


def set_reference(env: dict[str, str], tmp: Path, version: str, n: int = 10_000) -> None:
    """`driftline reference set` from a file of n labelled events of the same distribution."""
    path = tmp / f"reference-{version}.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({**e, "label": y}) for e, y in traffic(version, n, seed=99)))
    done = subprocess.run([sys.executable, "-m", "driftline.streams", "reference", "set", "--model", MODEL,
                           "--version", version, "--file", str(path), "--effective-from", "0"],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)


def produce(bootstrap: str, predictions: str, labels: str, version: str, n: int, seed: int,
            start_ms: int = BASE_MS) -> None:
    """The predictions and, right behind each, its label (same key, so the same partition)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 50,
                         "enable.idempotence": True, "queue.buffering.max.messages": 500_000})
    for k, (event, truth) in enumerate(traffic(version, n, seed, start_ms)):
        key = event["prediction_id"].encode()
        label = {"schema_version": 1, "prediction_id": event["prediction_id"], "model_id": MODEL,
                 "ts": event["ts"] + 1000, "label": truth}
        for topic, value in ((predictions, event), (labels, label)):
            while True:
                try:
                    producer.produce(topic, key=key, value=orjson.dumps(value))
                    break
                except BufferError:
                    producer.poll(0.1)
        if k % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("produce did not finish")


def model_config(scaled_days: float) -> dict[str, Any]:
    return {"defaults": {"window_seconds": WINDOW_S},
            "models": {MODEL: {"reference": {"source": "stored"},
                               "versions": {"2": {"false_alarm_budget": {"days": scaled_days}}}}}}


def scaled_days(windows: int, families: int = 9) -> float:
    """`days` of a one-alarm budget that expects TARGET false alarms over `windows` windows of `families`."""
    level = TARGET / (windows * families)
    return 0.5 * WINDOW_S / (families * level * 86_400)


def run_worker(env: dict[str, str], log: Path, windows: int, timeout: float) -> float:
    """Start a worker, wait until `windows` windows are written and the count rests, stop it; seconds taken."""
    port = int(env["DRIFTLINE_METRICS_PORT"])
    t0 = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "driftline.streams", "worker"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        last, since = -1.0, time.monotonic()
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"worker died:\n{log.read_text()[-3000:]}")
            now = scrape_metric(port, "driftline_windows_written_total")
            if now != last:
                last, since = now, time.monotonic()
            elif now >= windows and time.monotonic() - since > 10:
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"timed out with {last} of {windows} windows written")
    finally:
        proc.terminate()
        proc.wait(60)
    return time.monotonic() - t0


def counts(url: str) -> dict[str, dict[str, tuple[int, int]]]:
    """version -> family -> (windows judged, windows breached)."""
    with store.opened(url) as client:
        _, rows = store.query(client, "SELECT model_version, window_start, metric, max(breached) FROM "
                                      f"driftline.windows FINAL WHERE model_id = '{MODEL}' "
                                      "GROUP BY model_version, window_start, metric")
    seen: dict[tuple[str, str], dict[Any, int]] = {}
    for version, start, name, breached in rows:
        if name in FAMILY_OF:
            cell = seen.setdefault((version, FAMILY_OF[name]), {})
            cell[start] = max(cell.get(start, 0), int(breached))
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for (version, family), windows in seen.items():
        out.setdefault(version, {})[family] = (len(windows), sum(windows.values()))
    return out


def judge(config: MonitoringConfig, version: str, found: dict[str, tuple[int, int]]) -> list[list[str]]:
    """Table rows: family, windows, breached, expected, Poisson 99 %, within.

    The levels are those the worker built the families at: every budgeted family the labelled stored reference
    supports (a family that wrote no row still took its share), not only those seen in the table.
    """
    plan = plan_budget(config.resolve(MODEL, version), list(WINDOW_BUDGET_KNOBS))
    rows, total_exp, total_hit = [], 0.0, 0
    for family in sorted(found):
        windows, hit = found[family]
        level = plan.levels.get(family, plan.explicit.get(family, 0.0))
        expected = level * windows
        low, high = stats.poisson.interval(0.99, expected)
        total_exp, total_hit = total_exp + expected, total_hit + hit
        rows.append([family, f"{windows:,}", str(hit), f"{expected:.3g}", f"[{low:.0f}, {high:.0f}]",
                     "yes" if hit <= high else "**no**"])
    low, high = stats.poisson.interval(0.99, total_exp)
    rows.append(["**all families**", "", str(total_hit), f"{total_exp:.3g}", f"[{low:.0f}, {high:.0f}]",
                 "yes" if total_hit <= high else "**no**"])
    return rows


def run(bootstrap: str, home: str, n: int = N_EVENTS) -> str:
    tmp = Path(home)
    windows = n // PER_WINDOW
    raw = model_config(scaled_days(windows))
    (tmp / "models.yaml").write_text(yaml.safe_dump(raw))
    prefix = f"fa{os.getpid()}."
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update({"DRIFTLINE_HOME": str(tmp / "home"), "DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap,
                "DRIFTLINE_TOPIC_PREFIX": prefix, "DRIFTLINE_CONSUMER_GROUP": f"g-{prefix}",
                "DRIFTLINE_IDLE_PARTITION_SECONDS": "1", "DRIFTLINE_METRICS_PORT": str(free_port()),
                "DRIFTLINE_MONITORING_CONFIG": str(tmp / "models.yaml"), "DRIFTLINE_WINDOW_SECONDS": str(WINDOW_S),
                "PYTHONUNBUFFERED": "1"})
    os.environ.update({k: v for k, v in env.items() if k.startswith("DRIFTLINE_")})
    settings = load_settings()
    topics.ensure_topics(settings)
    for version in ("1", "2"):
        set_reference(env, tmp, version)
    t0 = time.monotonic()
    for k, version in enumerate(("1", "2")):
        # Event time is per partition, all models together: the second version follows the first, or it is late.
        produce(bootstrap, settings.topic(topics.PREDICTIONS), settings.topic(topics.LABELS), version, n, seed=k,
                start_ms=BASE_MS + k * (windows + 2) * WINDOW_S * 1000)
    produced = time.monotonic() - t0
    took = run_worker(env, tmp / "worker.log", 2 * windows, timeout=3600)
    config = MonitoringConfig.from_dict(raw)
    found = counts(settings.clickhouse_url)
    header = ["family", "windows", "breached", "expected", "Poisson 99 %", "within"]
    lines = [
        f"Stationary traffic of a classifier (8 numeric features, one categorical, one boolean, two segment "
        f"attributes, probabilities, every label joined 1 s later) with a stored reference of 10,000 events, "
        f"through the local broker and one `driftline worker`: {n:,} events per model version, {PER_WINDOW:,} per "
        f"{WINDOW_S} s window. Produced in {produced:.0f} s; the worker wrote every window in {took:.0f} s. "
        "Expected = the family's budgeted level x windows judged; within = the breached count is at most the "
        "Poisson 99 % upper bound (the budget bounds the rate; conservative families sit below it).", "",
    ]
    for version, title in (("1", "default budget (1 false alarm per 30 days)"),
                           ("2", f"budget scaled to {TARGET:g} expected false alarms over the run")):
        lines += [f"Version {version}, {title}:", "", "| " + " | ".join(header) + " |",
                  "| --- | ---: | ---: | ---: | --- | --- |"]
        lines += ["| " + " | ".join(r) + " |" for r in judge(config, version, found.get(version, {}))]
        lines.append("")
    return "\n".join(lines)
