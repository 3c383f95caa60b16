"""The store retry rule: a failing call is retried until it passes, an outage is logged once at each end and
shows in the metrics, and a stop while waiting gives up without the call."""

from __future__ import annotations

import logging
import threading

import pytest

from driftline.errors import StoreError
from driftline.streams import metrics, store_retry


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_retry, "BASE_DELAY_S", 0.001)
    monkeypatch.setattr(store_retry, "MAX_DELAY_S", 0.005)
    # The outage is the process's: a test before this one in the same process (a stage abandoned during an
    # outage) may have left one open, and these tests count from a store that is up.
    monkeypatch.setattr(store_retry._OUTAGE, "since", None)
    monkeypatch.setattr(store_retry._OUTAGE, "failures", 0)


def flaky(failures: int, seen: list[float]):
    calls = {"n": 0}

    def insert_windows(rows: list[int], token: str) -> str:
        calls["n"] += 1
        seen.append(_gauge("driftline_store_up"))
        if calls["n"] <= failures:
            raise StoreError("writing driftline.windows: Connection refused")
        return f"{len(rows)} rows, {token}"

    return insert_windows, calls


def _gauge(name: str) -> float:
    gauge = {"driftline_store_up": metrics.STORE_UP, "driftline_store_outage_seconds": metrics.STORE_OUTAGE}[name]
    return float(gauge.collect()[0].samples[0].value)


def test_a_failing_call_is_retried_until_it_passes_and_the_outage_is_logged_once_each_way(caplog):
    failed_before = metrics.STORE_WRITE_FAILURES.labels(operation="insert_windows")._value.get()
    seen: list[float] = []
    insert, calls = flaky(5, seen)
    with caplog.at_level(logging.INFO, logger="driftline.store"):
        assert store_retry.call(insert, [1, 2], token="t") == "2 rows, t"
    assert calls["n"] == 6
    assert seen == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # down from the first failure until the call passed
    assert _gauge("driftline_store_up") == 1.0 and _gauge("driftline_store_outage_seconds") == 0.0
    assert metrics.STORE_WRITE_FAILURES.labels(operation="insert_windows")._value.get() == failed_before + 5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("ClickHouse store unavailable (insert_windows): writing driftline.windows")
    assert lines[1].startswith("ClickHouse store available again after") and "(5 failed calls retried)" in lines[1]


def test_a_stop_while_waiting_gives_up_without_the_call():
    stop = threading.Event()
    insert, calls = flaky(10**9, [])
    stop.set()
    with store_retry.stopping_on(stop), pytest.raises(store_retry.Abandoned, match="insert_windows"):
        store_retry.call(insert, [1], token="t")
    assert calls["n"] == 1
    assert _gauge("driftline_store_up") == 0.0 and _gauge("driftline_store_outage_seconds") > 0.0
    store_retry.call(flaky(0, [])[0], [1], token="t")  # the next call that passes ends the outage
    assert _gauge("driftline_store_up") == 1.0
