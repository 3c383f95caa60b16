"""A stationary classifier through the broker and a worker at the default false-alarm budget: no window breaches."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from driftline.streams.kafka import topics
from load_tests import bench_false_alarms as bench
from tests.conftest import settings_of

pytestmark = pytest.mark.integration
WINDOWS = 8


def test_stationary_traffic_at_the_default_budget_breaches_no_window(env_for, worker_for, tmp_path: Path):
    config = tmp_path / "models.yaml"
    config.write_text(yaml.safe_dump({"models": {bench.MODEL: {"reference": {"source": "stored"}}}}))
    env = env_for(window_seconds=bench.WINDOW_S, allowed_lateness_seconds=5, monitoring_config=config)
    settings = settings_of(env)
    topics.ensure_topics(settings)
    bench.set_reference(env, tmp_path, "1")
    bench.produce(settings.kafka_bootstrap, settings.topic(topics.PREDICTIONS), settings.topic(topics.LABELS), "1",
                  WINDOWS * bench.PER_WINDOW, seed=0)
    worker = worker_for(env).start()
    worker.wait_metric("driftline_windows_written_total", WINDOWS)
    assert worker.terminate() == 0
    found = bench.counts(settings.clickhouse_url)["1"]
    # Every budgeted family but MMD (its permutations cannot reach the level) judged the windows ...
    assert set(found) == set(bench.FAMILY_OF.values()) - {"multivariate.mmd"}, found
    assert all(windows >= WINDOWS - 1 for windows, _ in found.values()), found
    # ... and none breached: at ~1e-6 per family and window, 8 windows expect ~1e-4 false alarms.
    assert {family: hit for family, (_, hit) in found.items() if hit} == {}
