"""The merge stage's tick detection restored from its saved state after a crash decides what an uninterrupted run
does: no tick lost, none fed twice, the same alarms (no broker, no store: the state records and inserts are
captured; an insert repeats nothing when its deduplication token was seen, as ClickHouse's does)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from driftline.detectors.reference import ReferenceProfile
from driftline.streams.config.model_config import MonitoringConfig
from driftline.streams.config.settings import load_settings
from driftline.streams.pipeline.decode import decode_prediction
from driftline.streams.pipeline.envelope import LabelHeader, TickHeader
from driftline.streams.pipeline.summarize import PredictionSummarizer
from driftline.streams.pipeline.ticks import TickSummarizer
from driftline.streams.references.book import Reference, ReferenceBook
from driftline.streams.stages.tick_detection import TickDetection

CONFIG = MonitoringConfig()
TICK, WINDOW, N_TICKS = 5_000, 60_000, 72


class Store:
    """A ClickHouse client that keeps inserts by deduplication token."""

    def __init__(self) -> None:
        self.inserts: dict[str, tuple[str, list[Any]]] = {}

    def insert(self, table: str, rows: list[Any], column_names: Any, settings: dict[str, str]) -> None:
        self.inserts.setdefault(settings["insert_deduplication_token"], (table, rows))

    def alarms(self) -> list[tuple[Any, ...]]:
        return sorted((r[2], r[6], r[7]) for table, rows in self.inserts.values() if table == "driftline.alarms"
                      for r in rows)


class Captured:
    """An outbox that keeps what it is given (the tick-state records) instead of sending it."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}

    def produce(self, topic: str, value: bytes | None, key: bytes, *, partition: int | None = None) -> None:
        assert value is not None
        self.records[key.decode()] = value

    def settle(self) -> None:
        pass


def preds(n: int, start_ms: int, seed: int, shift: float) -> list[Any]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = float(rng.normal(shift, 1.0))
        out.append(decode_prediction(orjson.dumps({
            "schema_version": 1, "prediction_id": f"{seed}-{i}", "model_id": "m", "model_version": "1",
            "ts": start_ms + i, "features": {"x": x, "c": str(rng.choice(["a", "b"]))},
            "prediction": {"score": float(1 / (1 + np.exp(-x))), "label": "yes" if x > 0 else "no"}})))
    return out


@pytest.fixture(scope="module")
def world() -> tuple[ReferenceBook, list[tuple[TickHeader, bytes]]]:
    ref_preds = preds(20_000, 0, seed=1, shift=0.0)
    profile = ReferenceProfile.fit({"x": np.array([p.features["x"] for p in ref_preds])},
                                   {"c": [p.features["c"] for p in ref_preds]}, classes=("no", "yes"),
                                   task="classification")
    summarizer = PredictionSummarizer(lambda *_: profile, CONFIG.resolve)
    summary = summarizer.new("m", "1", 0)
    summarizer.add(summary, ref_preds)
    rng = np.random.default_rng(2)  # labels: 20 % of the predictions are wrong
    predicted = [p.prediction.label for p in ref_preds]
    truth = [("no" if y == "yes" else "yes") if rng.random() < 0.2 else y for y in predicted]
    summary.add_labels(labels=truth, predicted=predicted,
                       scores=np.array([p.prediction.score for p in ref_preds]))
    book = ReferenceBook()
    book.add(Reference("m", "1", "ref-1", "h", "test", 0, profile).with_summary(summary))
    ticks = TickSummarizer(book.profile_for, CONFIG.resolve)
    parts = []
    for t in range(N_TICKS):
        for partition in (0, 1):  # two input partitions' shares of each tick; a 0.3 sd shift from tick 40
            acc = ticks.new("m", "1", t * TICK)
            ticks.add(acc, preds(120, t * TICK, seed=100 * t + partition, shift=0.3 if t >= 40 else 0.0))
            parts.append((TickHeader("m", "1", t * TICK, TICK, 2_000, partition, 2, 10 * t, 10 * t + 5, acc.n),
                          acc.to_bytes()))
    return book, parts


def detection(client: Store, book: ReferenceBook) -> tuple[TickDetection, Captured]:
    outbox = Captured()
    found = TickDetection(load_settings(), client, book, CONFIG.resolve, outbox)  # type: ignore[arg-type]
    found.pending[0], found.closed[0] = {}, {}
    return found, outbox


def feed(det: TickDetection, parts: list[tuple[TickHeader, bytes]], ticks: range, save_every: int = 4
         ) -> dict[int, list[Any]]:
    """Ticks in log order: both shares, then the watermark that closes the tick; labels now and then.
    Returns the judged window rows of each window closed (by start)."""
    written: dict[int, list[Any]] = {}
    for t in ticks:
        for header, body in parts[2 * t: 2 * t + 2]:
            det.receive(0, header, body, offset=100 * t + header.partition, min_mark=None)
        if t % 3 == 0:
            det.labels(LabelHeader("m", "1", (t * TICK) // WINDOW * WINDOW, WINDOW, 10_000, t % 2, 10 * t,
                                   10 * t + 4, 50, 40 - (t % 7) if t < 40 else 34, 0.0, 0.0, 0))
        det.close_ready(0, (t + 1) * TICK + 2_000)
        if (t + 1) * TICK % WINDOW == 0:
            start = (t + 1) * TICK - WINDOW
            rows = det.window_rows(("m", "1", start), WINDOW, "ref-1", "cfg")
            if rows:
                written[start] = rows
        if t % save_every == save_every - 1:
            det.save()
    return written


def test_a_restored_detector_replays_to_the_uninterrupted_state(world):
    book, parts = world
    store_a, store_b = Store(), Store()
    whole, whole_out = detection(store_a, book)
    rows_a = feed(whole, parts, range(N_TICKS))
    whole.save()
    first, first_out = detection(store_b, book)
    rows_b = feed(first, parts, range(0, 50))  # saved after tick 47; ticks 48 and 49 fed, not saved: the crash
    saved = dict(first_out.records)
    again, again_out = detection(store_b, book)
    again.restore(saved)
    # the replay starts before the saved point, as a commit can; a window written before the crash is not
    # written again (its rows are the first run's, kept by their deduplication token)
    rows_b = feed(again, parts, range(44, N_TICKS)) | rows_b
    again.save()
    a = orjson.loads(whole_out.records["m\x1f1"])
    b = orjson.loads(again_out.records["m\x1f1"])
    assert a["last_tick_ms"] == b["last_tick_ms"] == (N_TICKS - 1) * TICK
    assert a["detector"]["tick"] == b["detector"]["tick"] == N_TICKS
    for side in ("s_up", "s_down"):
        np.testing.assert_allclose(b["detector"]["cusum"][side], a["detector"]["cusum"][side], rtol=1e-12)
    np.testing.assert_allclose(b["detector"]["pool_sum"], a["detector"]["pool_sum"], rtol=1e-12)
    assert (a["labeled"], a["label_marks"]) == (b["labeled"], b["label_marks"])
    streams = whole.watches[("m", "1")].detector.names
    assert "error_rate" in streams  # labels are a stream: counted once each, replay or not
    i = streams.index("error_rate")
    assert a["detector"]["pool_n"][i] == b["detector"]["pool_n"][i]
    assert any(stream == "error_rate" for _, stream, _ in store_a.alarms())  # more errors from tick 40
    alarms_a, alarms_b = store_a.alarms(), store_b.alarms()
    assert alarms_a and alarms_a == alarms_b
    assert min(t for t, _, _ in alarms_a).timestamp() * 1000 >= 40 * TICK
    # the window rows: one judged CUSUM row per stream of every window, the same in both runs
    assert sorted(rows_a) == sorted(rows_b) == [w * WINDOW for w in range(N_TICKS * TICK // WINDOW)]
    for start, rows in rows_a.items():
        other = rows_b[start]
        assert [r[4:7] + r[8:10] for r in rows] == [r[4:7] + r[8:10] for r in other]
        np.testing.assert_allclose([r[7] for r in rows], [r[7] for r in other], rtol=1e-12)
    breached = {r[2].timestamp() * 1000 for rows in rows_a.values() for r in rows if r[9]}
    assert breached and min(breached) >= 3 * WINDOW  # the shift starts at tick 40, in the fourth window
