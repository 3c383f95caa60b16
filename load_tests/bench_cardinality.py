"""High-cardinality abuse at full size (issue #14): 100,000 model ids, 10,000 feature names, 1,000,000 categories.

A `driftline worker` (stages all, default limits: DRIFTLINE_MAX_MODELS=1000, summary.max_features=250) warms up
on a healthy model's traffic, then takes the abusive traffic mixed into the healthy model's: its RSS (VmRSS) and
progress are sampled every half second. The models have no reference (``source: stored``, none stored), so they
stay in discovery mode, where the feature limit applies. `tests/integration/test_high_cardinality.py` is the
same run at a fifth of the size, with its assertions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from driftline.streams import store
from driftline.streams.config.settings import load_settings
from driftline.streams.kafka import topics
from driftline.streams.kafka.local_broker import free_port
from load_tests.scrape import scrape_metric
from load_tests.traffic import produce

WINDOW_MS, N_WINDOWS = 60_000, 4  # traffic in a fifth window closes the first four
N_HEALTHY, N_WIDE = 6000, 2000  # per window
N_MODELS, N_NAMES, NAMES_PER_RECORD, N_CATEGORIES = 100_000, 10_000, 50, 1_000_000
JOIN_ENTRIES = 50_000
ROOT = Path(__file__).resolve().parent.parent


def _event(pid: str, model: str, ts: int, features: dict[str, object], score: float) -> tuple[bytes, bytes]:
    return pid.encode(), orjson.dumps({"schema_version": 1, "prediction_id": pid, "model_id": model,
                                       "model_version": "1", "ts": ts, "features": features,
                                       "prediction": {"score": score}})


def traffic(base: int, control: bool) -> list[tuple[int, tuple[bytes, bytes]]]:
    """(event time, (key, value)) of every record, in event-time order: the healthy model in every window, the
    rest spread over the first four (a quarter of the model ids, names and categories in each). ``control``:
    the same records without the cardinality (one model for the model ids, 50 feature names, 100 categories)."""
    names, categories = (NAMES_PER_RECORD, 100) if control else (N_NAMES, N_CATEGORIES)
    rng = np.random.default_rng(14)
    out: list[tuple[int, tuple[bytes, bytes]]] = []
    per_window_models, per_window_cats = N_MODELS // N_WINDOWS, N_CATEGORIES // N_WINDOWS
    for w in range(N_WINDOWS + 1):
        start = base + w * WINDOW_MS
        for i in range(N_HEALTHY):
            ts = start + i * WINDOW_MS // N_HEALTHY
            out.append((ts, _event(f"h{w}-{i}", "healthy", ts, {"amount": float(rng.lognormal(3, 1)),
                                                                  "age": int(rng.integers(18, 90))}, 0.5)))
        if w == N_WINDOWS:
            break
        for i in range(N_WIDE):
            first = (w * N_WIDE + i) * NAMES_PER_RECORD
            ts = start + i * WINDOW_MS // N_WIDE
            feats = {f"x{(first + j) % names:05d}": 1.0 for j in range(NAMES_PER_RECORD)}
            out.append((ts, _event(f"w{w}-{i}", "wide", ts, feats, 0.5)))
        for i in range(per_window_cats):
            k, ts = w * per_window_cats + i, start + i * WINDOW_MS // per_window_cats
            out.append((ts, _event(f"c{k}", "cats", ts, {"merchant": f"m{k % categories}"}, 0.5)))
        for i in range(per_window_models):
            k, ts = w * per_window_models + i, start + i * WINDOW_MS // per_window_models
            model = "steady" if control else f"abuse-{k:06d}"
            out.append((ts, _event(f"a{k}", model, ts, {"amount": 1.0}, 0.5)))
    out.sort(key=lambda r: r[0])
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(bootstrap: str, home: str, control: bool) -> dict[str, Any]:
    """One worker's run over the traffic: its RSS curve and what it counted and wrote."""
    prefix = f"card{uuid.uuid4().hex[:6]}."
    home = str(Path(home) / prefix)
    Path(home).mkdir()
    config = Path(home) / "monitoring.yaml"
    config.write_text("defaults:\n  reference: {source: stored}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update({"DRIFTLINE_KAFKA_BOOTSTRAP": bootstrap, "DRIFTLINE_TOPIC_PREFIX": prefix,
                "DRIFTLINE_HOME": str(Path(home) / "worker"), "DRIFTLINE_CONSUMER_GROUP": f"g-{prefix}",
                "DRIFTLINE_METRICS_PORT": str(port), "DRIFTLINE_IDLE_PARTITION_SECONDS": "1",
                "DRIFTLINE_MONITORING_CONFIG": str(config), "PYTHONUNBUFFERED": "1",
                # the label-join store is bounded on its own (1,000,000 predictions per partition by default,
                # ~1.2 KiB each); a smaller bound keeps it from hiding the limits' effect on memory
                "DRIFTLINE_MAX_JOIN_ENTRIES": str(JOIN_ENTRIES)})
    settings = load_settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, home=Path(home) / "worker")
    topics.ensure_topics(settings)
    source = settings.topic(topics.PREDICTIONS)
    now = int(time.time() * 1000)
    base = now - now % WINDOW_MS + 10 * WINDOW_MS  # ahead: the idle advance closes nothing early
    records = traffic(base, control)
    split = next(i for i, r in enumerate(records) if r[0] >= base + 20_000)
    head = [r for _, r in records[:split]]
    warm = [r for r in head if r[0].startswith(b"h")]  # the healthy model's keys
    rest = [r for r in head if not r[0].startswith(b"h")] + [r for _, r in records[split:]]
    produce(bootstrap, source, warm)
    with tempfile.TemporaryFile() as log:
        worker = subprocess.Popen([sys.executable, "-m", "driftline.streams", "worker"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            while scrape_metric(port, "driftline_events_total") < len(warm):
                if worker.poll() is not None:
                    raise RuntimeError("the worker died during its warm-up")
                time.sleep(0.5)
            time.sleep(2)
            before = _rss_mb(worker.pid)
            start = time.monotonic()
            produce(bootstrap, source, rest)
            produced = time.monotonic() - start
            curve: list[tuple[float, float, float, float, float]] = []
            handled = 0.0
            while handled < len(records) and time.monotonic() - start < 1800:
                if worker.poll() is not None:
                    raise RuntimeError("the worker died")
                dropped = scrape_metric(port, "driftline_dropped_models_total")
                handled = scrape_metric(port, "driftline_events_total") + dropped
                curve.append((time.monotonic() - start, handled - len(warm), dropped,
                              scrape_metric(port, "driftline_windows_written_total"), _rss_mb(worker.pid)))
                time.sleep(0.5)
            took = curve[-1][0]
            windows = 3 * N_WINDOWS + (N_WINDOWS if control else N_MODELS - curve[-1][2])
            while scrape_metric(port, "driftline_windows_written_total") < windows and time.monotonic() - start < 3600:
                curve.append((time.monotonic() - start, handled - len(warm), curve[-1][2],
                              scrape_metric(port, "driftline_windows_written_total"), _rss_mb(worker.pid)))
                time.sleep(2)
            written = time.monotonic() - start
            curve.append((written, handled - len(warm), curve[-1][2],
                          scrape_metric(port, "driftline_windows_written_total"), _rss_mb(worker.pid)))
            dropped_features = scrape_metric(port, "driftline_dropped_features_total")
            folded = scrape_metric(port, "driftline_folded_categories_total")
        finally:
            worker.terminate()
            worker.wait(120)
    with store.opened(settings.clickhouse_url) as client:
        _, rows = store.query(client, "SELECT count(), uniqExact(model_id), max(length(detail)) "
                                      "FROM driftline.windows FINAL")
        _, wide = store.query(client, "SELECT max(c) FROM (SELECT window_start, uniqExact(feature) AS c FROM "
                                      "driftline.windows FINAL WHERE model_id = 'wide' AND metric = 'missing' "
                                      "AND NOT startsWith(feature, 'prediction.') GROUP BY window_start)")
    return {"before": before, "peak": max(point[4] for point in curve), "curve": curve, "took": took,
            "produced": produced, "written": written, "warm": len(warm), "rest": len(rest), "rows": rows[0],
            "wide": wide[0][0], "dropped_features": dropped_features, "folded": folded}


def run(bootstrap: str, home: str) -> str:
    abuse, control = measure(bootstrap, home, False), measure(bootstrap, home, True)
    curve, rest, took = abuse["curve"], abuse["rest"], abuse["took"]
    n_rows, n_models, _ = abuse["rows"]
    dropped = curve[-1][2]
    step = max(1, len(curve) // 12)
    table = [f"| {t:.0f} | {h:,.0f} | {d:,.0f} | {w:,.0f} | {r:,.0f} |" for t, h, d, w, r in curve[::step]]
    return "\n".join([
        "## High-cardinality abuse (issue #14)",
        "",
        f"One `driftline worker` (stages all, 6 partitions, default limits: `DRIFTLINE_MAX_MODELS` 1000, "
        f"`summary.max_features` 250; `DRIFTLINE_MAX_JOIN_ENTRIES` {JOIN_ENTRIES:,}) warms up on a healthy model "
        f"({abuse['warm']:,} events), then takes {rest:,} records: {N_MODELS:,} distinct model ids (one record "
        f"each), a model naming {N_NAMES:,} distinct features ({NAMES_PER_RECORD} per record, "
        f"{N_WIDE * N_WINDOWS:,} records), a categorical feature with {N_CATEGORIES:,} distinct values (one per "
        f"record) and the healthy model's {N_HEALTHY:,} events per minute, spread over four one-minute windows (a "
        "fifth closes them). The control run sends the same records without the cardinality (one model instead "
        "of the model ids, 50 feature names, 100 categories). `python -m load_tests --only cardinality`; "
        "`tests/integration/test_high_cardinality.py` is the same at a fifth of the size, with assertions.",
        "",
        "| s since phase 2 | records handled | dead-lettered (model limit) | windows written | worker RSS (MiB) |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *table,
        "",
        f"- RSS {abuse['before']:,.0f} MiB after the warm-up, peak {abuse['peak']:,.0f} MiB "
        f"(+{abuse['peak'] - abuse['before']:,.0f} MiB); control run: {control['before']:,.0f} MiB, peak "
        f"{control['peak']:,.0f} MiB (+{control['peak'] - control['before']:,.0f} MiB).",
        f"- Throughput: {rest:,} records handled in {took:.0f} s, {rest / took:,.0f} records/s (producing them took "
        f"{abuse['produced']:.0f} s of that, on the same 2 cores as the broker and the worker); control run: "
        f"{control['took']:.0f} s, {rest / control['took']:,.0f} records/s.",
        f"- {dropped:,.0f} records dead-lettered by the model limit, {N_MODELS - dropped:,.0f} summarised; all "
        f"windows written {abuse['written']:.0f} s after phase 2 began ({curve[-1][3]:,.0f} windows, "
        f"{n_models:,} model ids, {n_rows:,} rows in `driftline.windows`; control run: "
        f"{control['written']:.0f} s, {control['rows'][0]:,} rows).",
        f"- The wide model's windows hold at most {abuse['wide']} features; {abuse['dropped_features']:,.0f} feature "
        f"values were dropped and counted. {abuse['folded']:,.0f} categorical values were folded (counted in "
        "`other` only).",
    ])


if __name__ == "__main__":
    from load_tests.__main__ import _with_broker

    print(_with_broker(run)())
