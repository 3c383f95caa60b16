"""The API over real HTTP: uvicorn on a free loopback port in a thread, on a chDB store filled here."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from driftline.streams import store
from driftline.streams.api.address import Address
from driftline.streams.api.server import ApiServer
from driftline.streams.config.settings import Settings
from driftline.streams.kafka.local_broker import free_port

T0 = 1_767_225_600_000
MINUTE = 60_000
TICK = 5_000
TOKEN = "s3cret-token-for-tests"


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def window_rows(model: str, version: str, w: int, drifted: bool) -> list[list[object]]:
    start, end = at(T0 + w * MINUTE), at(T0 + (w + 1) * MINUTE)

    def row(metric: str, feature: str, slice_: str, value: float, n: int, breached: bool = False,
            threshold: float | None = None, p: float | None = None, detail: dict | None = None) -> list[object]:
        return [model, version, start, end, metric, feature, slice_, value, n, int(breached), threshold, p,
                json.dumps(detail or {}), "file-abc", "cfg123", 0]

    bins = [{"lower": i / 5, "upper": (i + 1) / 5, "count": 20, "mean_p": i / 5 + 0.1, "frac_pos": i / 5 + 0.05}
            for i in range(5)]
    return [row("count", "", "", 500, 500),
            row("ks", "age", "", 0.3 if drifted else 0.02, 500, drifted, 0.01, 1e-9 if drifted else 0.5,
                {"psi": 0.6 if drifted else 0.01}),
            row("chi2", "country", "", 1.0, 500, False, 0.01, 0.7, {"psi": 0.002}),
            row("accuracy", "", "", 0.8 if drifted else 0.93, 300, drifted, 0.9, 1e-4 if drifted else 0.4),
            row("estimated_accuracy", "", "", 0.85 if drifted else 0.92, 500),
            row("label_coverage", "", "", 0.6, 500),
            row("ece", "", "", 0.05, 300, False, None, None, {"reliability": bins}),
            row("slice_accuracy", "", "region=eu", 0.7 if drifted else 0.94, 150, drifted, 0.9, 0.001,
                {"baseline_accuracy": 0.93}),
            row("slice_accuracy", "", "region=us", 0.95, 150, False, 0.9, 0.5, {"baseline_accuracy": 0.93})]


def alert_row(model: str, incident: str, seq: int, transition: str, w: int) -> list[object]:
    evidence = {"breaches": [{"metric": "ks", "feature": "age", "slice": "", "value": 0.3, "threshold": 0.01,
                              "p_value": 1e-9, "n": 500, "window_start": at(T0 + w * MINUTE).isoformat()}]}
    return [f"{incident}/{seq}", "transition", incident[:8], incident, seq, transition, model, "3", "drift",
            "warning", at(T0 + w * MINUTE), f"{model} v3: drift {transition}: ks on age = 0.3", ["ks:age"],
            json.dumps(evidence), "SELECT 1", "[]", 1, "", "", None, 0, ""]


def alarm_row(model: str, version: str, tick: int, method: str, stream: str, statistic: float = 9.5,
              threshold: float | None = 8.0) -> list[object]:
    """An alarm at tick ``tick`` of 5 s from T0 + 5 min (window 5's first tick), its change 3 ticks earlier."""
    start = T0 + 5 * MINUTE + tick * TICK
    change = None if threshold is None else at(start - 3 * TICK)
    return [model, version, at(start), at(start + TICK), at(start - start % MINUTE), method, stream, statistic,
            threshold, change, "up", 120, "file-abc", "cfg123", json.dumps({"z": 3.1})]


# fraud: v3 cusum on age at ticks 0-5, page-hinkley on score at tick 2 (no h, no change start), and v4 cusum on
# age at tick 7 (a version whose first window is not written yet); churn has none; fresh has an alarm but no
# window yet (alarms come seconds after the data, windows a minute or two later).
ALARMS = [*(alarm_row("fraud", "3", t, "cusum", "age", 9.5 + t) for t in range(6)),
          alarm_row("fraud", "3", 2, "page_hinkley", "score", 51.0, None),
          alarm_row("fraud", "4", 7, "cusum", "age", 12.25), alarm_row("fresh", "1", 0, "cusum", "score")]


def fill(url: str) -> None:
    with store.opened(url) as client:
        for w in range(8):
            store.insert_windows(client, window_rows("fraud", "3", w, drifted=w >= 5), f"fraud-{w}")
        for w in range(3):
            store.insert_windows(client, window_rows("churn", "1", w, drifted=False), f"churn-{w}")
        store.insert_alerts(client, [alert_row("fraud", "inc-open", 0, "triggered", 7),
                                     alert_row("churn", "inc-closed", 0, "triggered", 1),
                                     alert_row("churn", "inc-closed", 1, "resolved", 2)], "alerts")
        store.insert_alarms(client, ALARMS, "alarms")
        store.insert_alarms(client, ALARMS[:1], "alarms-replayed")  # the same alarm again: FINAL keeps one


@dataclass
class Served:
    """A running API: its base URL, settings and local key."""

    url: str
    settings: Settings
    local_key: str

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]


def serve(home: Path, **overrides: object) -> Iterator[Served]:
    settings = Settings(home=home, api_port=free_port(), clickhouse_url=f"chdb://{home.parent / 'clickhouse'}",
                        api_sql_max_rows=50, api_sql_max_bytes=20_000, api_sql_timeout_seconds=1.0,
                        **overrides)  # type: ignore[arg-type]
    halt = threading.Event()
    server = ApiServer(settings, halt)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while (address := Address.read(home)) is None:
        assert time.monotonic() < deadline, "the API did not write its address file"
        time.sleep(0.05)
    yield Served(address.url, settings, address.local_key)
    halt.set()
    thread.join(30)
    assert not (home / "api.json").exists()


@pytest.fixture(scope="package")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api")
    fill(f"chdb://{root / 'clickhouse'}")
    return root


@pytest.fixture(scope="package")
def api(store_dir: Path) -> Iterator[Served]:
    yield from serve(store_dir / "open")


@pytest.fixture(scope="package")
def guarded_api(store_dir: Path) -> Iterator[Served]:
    yield from serve(store_dir / "guarded", api_token=TOKEN)
