"""A worker started behind its traffic writes the same rows as one that watched the traffic arrive.

The scenario operators run into after an outage or a deploy: a classifier's predictions (numeric,
categorical and boolean features, two segment attributes, probabilities, score and label), each followed at
once by its label, are already on the topics when the worker starts. With an automatic reference the
profile is learnt while the worker is far ahead of it in event time; before, the windows meant to be judged
were all summarised in discovery mode (nothing was ever judged) and label summaries made against two
profiles crashed the merge stage. The same events, sent at their event-time pace to a running worker, are
the reference run: every row must agree (counts exact, metrics to 1e-9, same breaches, same reference).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from driftline.detectors.sequential.tick_detector import METHODS
from driftline.streams import store
from driftline.streams.kafka import topics
from tests.conftest import settings_of
from tests.integration.synthetic import outside_producer

pytestmark = pytest.mark.integration
MODEL, VERSION = "loan-default", "1"
SIZE_MS = 2000
N_WINDOWS = 20
PER_WINDOW = 400
SHIFTED_FROM = 14  # window index; the automatic reference (K = 5) judges windows from index 12 on
NUMERIC = tuple(f"x{i}" for i in range(8))
RowKey = tuple[int, str, str, str]


def traffic(base_ms: int) -> list[tuple[int, str, bytes, bytes]]:
    """(event time, prediction id, prediction, label) in event-time order; the same draws for every base."""
    rng = np.random.default_rng(2026)
    out = []
    for w in range(N_WINDOWS):
        shift = 0.5 if w >= SHIFTED_FROM else 0.0
        for i in range(PER_WINDOW):
            ts = base_ms + w * SIZE_MS + i * SIZE_MS // PER_WINDOW
            pid = f"p{w}-{i}"
            x = rng.normal(0.0, 1.0, len(NUMERIC))
            x[0] += shift
            p = float(1 / (1 + math.exp(-(x[0] + 0.5 * x[1]))))
            predicted = "default" if p >= 0.5 else "repaid"
            truth = predicted if rng.random() < 0.85 else ("repaid" if predicted == "default" else "default")
            features: dict[str, object] = {name: float(v) for name, v in zip(NUMERIC, x, strict=True)}
            features["purpose"] = str(rng.choice(["car", "home", "study"], p=[0.5, 0.3, 0.2]))
            features["has_guarantor"] = bool(rng.random() < 0.3)
            prediction = {"schema_version": 1, "prediction_id": pid, "model_id": MODEL, "model_version": VERSION,
                          "ts": ts, "features": features,
                          "prediction": {"score": p, "label": predicted,
                                         "probabilities": {"repaid": 1 - p, "default": p}},
                          "segments": {"region": str(rng.choice(["eu", "us", "apac"])),
                                       "country": str(rng.choice(["fr", "de", "us", "jp"]))}}
            label = {"schema_version": 1, "prediction_id": pid, "model_id": MODEL, "ts": ts, "label": truth}
            out.append((ts, pid, orjson.dumps(prediction), orjson.dumps(label)))
    return out


def produce(bootstrap: str, prefix_topics: tuple[str, str], events: list[tuple[int, str, bytes, bytes]],
            at_pace: bool) -> None:
    """Each prediction followed at once by its label; at event-time pace, or all at once. Every 97th event
    comes with a malformed record on each topic (dead-lettered, never in a row)."""
    producer = outside_producer(bootstrap)
    for n, (ts, pid, prediction, label) in enumerate(events):
        if at_pace:
            while time.time() * 1000 < ts:
                time.sleep(0.002)
        producer.produce(prefix_topics[0], key=pid.encode(), value=prediction)
        producer.produce(prefix_topics[1], key=pid.encode(), value=label)
        if n % 97 == 0:
            for topic in prefix_topics:
                producer.produce(topic, key=f"bad-{n}".encode(), value=prediction[: len(prediction) // 2])
        if n % 200 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def rows_by_window(url: str, base_ms: int, labels: bool = True) -> dict[RowKey, tuple[float, int, int, str]]:
    """Every row of the model's windows; without ``labels``, only the rows of the predictions (revision 0)."""
    with store.opened(url) as client:
        _, found = store.query(client, (
            "SELECT intDiv(toUnixTimestamp64Milli(window_start) - {b:Int64}, {s:Int64}), metric, feature, slice, "
            "value, n, breached, reference_id FROM driftline.windows FINAL WHERE model_id = {m:String}"
            + ("" if labels else " AND revision = 0")), {"b": base_ms, "s": SIZE_MS, "m": MODEL})
    # Sequential rows are left out: with an automatic reference, the tick on which the sequential detectors start
    # depends on the pace of the run (a known gap, see the README's Guarantees); their restart is exact
    # (test_sequential).
    return {(int(w), metric, feature, slice_): (float(value), int(n), int(breached), ref)
            for w, metric, feature, slice_, value, n, breached, ref in found if metric not in METHODS}


def wait_settled(worker, name: str, quiet_s: float = 8.0, timeout_s: float = 120.0) -> None:
    """Until the metric stops growing for ``quiet_s`` (a restarted worker's counters start again at 0)."""
    deadline = time.monotonic() + timeout_s
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        value = worker.metric(name)
        if value != last:
            last, since = value, time.monotonic()
        elif value > 0 and time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} still changing after {timeout_s} s")


def run(env_for, worker_for, tmp_path: Path, name: str, backlog: bool, kill: bool = True, labels: bool = True
        ) -> tuple[dict[RowKey, tuple], int, str]:
    """``backlog``: produce everything, then start the worker; else start it, then produce at pace. With ``kill``
    the worker is SIGKILLed once while the automatic reference is being learnt, and started again."""
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"models:\n  {MODEL}:\n    window_seconds: 2\n    allowed_lateness_seconds: 0.5\n")
    prefix = f"{name}-{tmp_path.name[-12:]}."
    env = env_for(topic_prefix=prefix, consumer_group=f"g-{prefix}", home=tmp_path / name, monitoring_config=config)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    names = (settings.topic(topics.PREDICTIONS), settings.topic(topics.LABELS))
    worker = worker_for(env, name)
    if backlog:
        base_ms = (int(time.time() * 1000) - 3_600_000) // SIZE_MS * SIZE_MS
        produce(settings.kafka_bootstrap, names, traffic(base_ms), at_pace=False)
        worker.start()
        if kill:
            worker.wait_metric("driftline_windows_written_total", 2)  # the reference is learnt from the first 5
            worker.kill()
            worker.start()
    else:
        worker.start()
        worker.wait_metric("driftline_stage2_watermark_seconds", 1)
        base_ms = (int(time.time() * 1000) // SIZE_MS + 2) * SIZE_MS
        producing = threading.Thread(target=produce, args=(settings.kafka_bootstrap, names, traffic(base_ms), True))
        producing.start()
        if kill:
            # live, the warm-up windows close one by one: the merge stage's commit would pass them without its floor
            worker.wait_metric("driftline_windows_written_total", 3)
            worker.kill()
            worker.start()
        producing.join()
    worker.wait_metric("driftline_stage2_watermark_seconds", (base_ms + (N_WINDOWS + 1) * SIZE_MS) / 1000, 240)
    wait_settled(worker, "driftline_labels_joined_total")
    assert worker.metric("driftline_dead_letters_total") > 0  # the malformed records were read and set aside
    assert worker.terminate() == 0
    return rows_by_window(settings.clickhouse_url, base_ms, labels), base_ms, worker.log.read_text()


def test_a_worker_behind_its_traffic_writes_the_rows_of_a_live_one(env_for, worker_for, tmp_path: Path):
    behind, _, behind_log = run(env_for, worker_for, tmp_path, "behind", backlog=True, kill=False)
    assert "waits for the automatic reference" in behind_log  # the backlog did reach the profile's windows first
    assert "Traceback" not in behind_log
    ks = {w: behind[(w, "ks", "x0", "")] for w in range(N_WINDOWS) if (w, "ks", "x0", "") in behind}
    assert sorted(ks) == list(range(12, N_WINDOWS)), "windows judged against the automatic reference"
    assert all(ref.startswith("auto-") for _, _, _, ref in ks.values())
    assert {w for w, (_, _, breached, _) in ks.items() if breached} == set(range(SHIFTED_FROM, N_WINDOWS))
    assert sum(behind[(w, "count", "", "")][0] for w in range(N_WINDOWS)) == N_WINDOWS * PER_WINDOW
    assert sum(behind[(w, "labels", "", "")][0] for w in range(N_WINDOWS)) == N_WINDOWS * PER_WINDOW
    assert not [k for k in behind if k[1] in ("merge_conflict", "unmerged_events", "labels_unmatched")]
    assert {w for w, metric, _, _ in behind if metric == "accuracy"} == set(range(N_WINDOWS))

    live, _, _ = run(env_for, worker_for, tmp_path, "live", backlog=False, kill=False)
    assert_same(behind, live)


def assert_same(expected: dict[RowKey, tuple], got: dict[RowKey, tuple]) -> None:
    assert sorted(got) == sorted(expected)
    for key, (value, n, breached, ref) in expected.items():
        other = got[key]
        assert (n, breached, ref) == other[1:], key
        assert (math.isnan(value) and math.isnan(other[0])) or math.isclose(value, other[0], rel_tol=1e-9,
                                                                            abs_tol=1e-12), (key, value, other)


def test_a_live_worker_killed_while_learning_its_reference_learns_the_same_one(env_for, worker_for, tmp_path: Path):
    """The merge stage learns the automatic reference in memory; its commit stays behind those windows.

    One worker behind its traffic and one live, each killed once during the warm-up. Only the prediction rows
    are compared: a SIGKILL between a label summary's delivery and its offsets' commit makes the summarize stage
    fold some labels again into differently cut summaries, which the merge stage cannot tell apart (a known
    gap, see the README).
    """
    expected, _, behind_log = run(env_for, worker_for, tmp_path, "behind", backlog=True, labels=False)
    killed, _, log = run(env_for, worker_for, tmp_path, "killed", backlog=False, labels=False)
    assert "Traceback" not in log and "Traceback" not in behind_log
    assert {w for w, metric, _, _ in expected if metric == "ks"} == set(range(12, N_WINDOWS))
    assert {w for w, metric, _, _ in killed if metric == "ks"} == set(range(12, N_WINDOWS))
    assert_same(expected, killed)
