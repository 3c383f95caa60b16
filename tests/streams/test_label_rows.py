"""Label windows across a profile switch: label summaries of one window made against different profiles
never stop the merge stage; the one made against the window's profile is kept, the rest reported. And the
store functions behind the merge stage (label state, window counts, window rows, the demo's table) against
an embedded chDB."""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import pytest

from driftline.detectors.findings import Finding
from driftline.detectors.summaries import ReferenceProfile, WindowSummary
from driftline.streams import store
from driftline.streams.config.model_config import MonitoringConfig
from driftline.streams.pipeline.envelope import LabelHeader
from driftline.streams.pipeline.label_rows import PartState, combine_label_summaries, label_rows
from driftline.streams.pipeline.rows import to_rows
from driftline.streams.references.book import DISCOVERY, Reference, ReferenceBook
from driftline.streams.stages import label_windows
from driftline.streams.stages.label_windows import LabelWindows

CLASSES = ("no", "yes")
KEY = ("fraud", "3", 60_000)
CONFIG = MonitoringConfig().resolve("fraud", "3")


def profile(scale: float) -> ReferenceProfile:
    rng = np.random.default_rng(1)
    return ReferenceProfile.fit({"amount": rng.normal(0, scale, 500)}, classes=CLASSES, task="classification")


def labelled(prof: ReferenceProfile, n: int, seed: int) -> WindowSummary:
    rng = np.random.default_rng(seed)
    summary = WindowSummary.empty(prof)
    scores = rng.random(n)
    summary.add_labels(labels=[CLASSES[int(rng.random() < s)] for s in scores], scores=scores,
                       segments={"region": [str(rng.choice(["eu", "us"])) for _ in range(n)]})
    return summary


def book_with(prof: ReferenceProfile, summary: WindowSummary | None = None) -> ReferenceBook:
    book = ReferenceBook()
    book.add(Reference("fraud", "3", "auto-x", "h", "auto:5-windows", 0, prof, summary))
    return book


def test_an_empty_discovery_summary_and_labels_under_the_new_profile_merge_without_loss():
    """The crash of issue 8: labels joined before the automatic reference (discovery) and after it."""
    p = profile(1.0)
    before = WindowSummary.empty(DISCOVERY).to_bytes()
    after = labelled(p, 50, 2)
    for stored, new in ((before, after.to_bytes()), (after.to_bytes(), before)):
        kept, dropped = combine_label_summaries(stored, new, p.content_hash())
        assert dropped == 0
        assert WindowSummary.from_bytes(kept).classifier.labeled == 50  # type: ignore[union-attr]


def test_of_two_labelled_summaries_the_one_made_against_the_windows_profile_is_kept():
    p, q = profile(1.0), profile(3.0)
    ours, theirs = labelled(p, 40, 3), labelled(q, 25, 4)
    kept, dropped = combine_label_summaries(ours.to_bytes(), theirs.to_bytes(), p.content_hash())
    assert (WindowSummary.from_bytes(kept).profile_hash, dropped) == (p.content_hash(), 25)
    kept, dropped = combine_label_summaries(theirs.to_bytes(), ours.to_bytes(), p.content_hash())
    assert (WindowSummary.from_bytes(kept).profile_hash, dropped) == (p.content_hash(), 25)
    same, none = combine_label_summaries(ours.to_bytes(), labelled(p, 10, 5).to_bytes(), p.content_hash())
    assert none == 0 and WindowSummary.from_bytes(same).classifier.labeled == 50  # type: ignore[union-attr]


def test_label_rows_judge_the_comparable_summaries_and_report_the_rest():
    p, q = profile(1.0), profile(3.0)
    book = book_with(p, labelled(p, 400, 6))
    good = {0: PartState(9, 40, 30, summary=labelled(p, 40, 7).to_bytes()),
            1: PartState(9, 30, 20, summary=labelled(p, 30, 8).to_bytes())}
    stray = PartState(9, 25, 15, conflicts=5, summary=labelled(q, 25, 9).to_bytes())
    rows = label_rows(KEY, 60_000, {**good, 2: stray}, 100, book, CONFIG)
    clean = label_rows(KEY, 60_000, good, 100, book, CONFIG)
    by_metric = {(r[4], r[5], r[6]): r[7] for r in rows}
    assert by_metric[("merge_conflict", "", "")] == 30.0  # 25 left out now, 5 when partition 2 merged its own
    assert by_metric[("labels", "", "")] == 95.0
    judged = {(r[4], r[5], r[6]): r[7] for r in clean if r[4] not in ("labels", "label_coverage")}
    assert judged and all(by_metric[k] == v for k, v in judged.items())


@pytest.fixture
def chdb_client(tmp_path: Path):
    with store.opened(f"chdb://{tmp_path / 'ch'}") as client:
        yield client


def test_label_windows_apply_across_a_profile_switch_keeps_running(chdb_client):
    p = profile(1.0)
    book = ReferenceBook()
    windows = LabelWindows(chdb_client, book, lambda _m, _v: CONFIG)

    def header(first: int, last: int, labeled: int) -> LabelHeader:
        return LabelHeader("fraud", "3", KEY[2], 60_000, 0, 0, first, last, labeled, labeled // 2, 0.0, 0.0, 0)

    windows.apply([(header(0, 9, 10), WindowSummary.empty(DISCOVERY).to_bytes())])  # before the reference
    book.add(Reference("fraud", "3", "auto-x", "h", "auto:5-windows", 0, p, labelled(p, 200, 10)))
    windows.apply([(header(10, 29, 20), labelled(p, 20, 11).to_bytes())])  # after it: no crash, nothing lost
    stray = labelled(profile(3.0), 15, 12)
    windows.apply([(header(30, 44, 15), stray.to_bytes())])  # made against another profile: reported
    _, found = store.query(chdb_client, "SELECT metric, value FROM driftline.windows FINAL "
                                        "WHERE metric IN ('labels', 'merge_conflict')")
    assert dict(found) == {"labels": 45.0, "merge_conflict": 15.0}
    restarted = LabelWindows(chdb_client, book, lambda _m, _v: CONFIG)  # state read back from the store
    assert restarted._load(KEY)[0].conflicts == 15
    assert WindowSummary.from_bytes(restarted._load(KEY)[0].summary).classifier.labeled == 20  # type: ignore[union-attr]


def test_label_summaries_applied_together_leave_what_one_by_one_leaves_in_one_write_per_window(tmp_path: Path):
    """The merge stage applies a batch's label summaries together: per window one state insert and one rows
    insert, not two per summary; the stored state and the latest rows are those of applying them one by one,
    and a summary already merged (a replay) changes nothing in either way."""
    p = profile(1.0)
    other = (KEY[0], KEY[1], KEY[2] + 60_000)

    def header(key: tuple[str, str, int], partition: int, first: int, last: int, labeled: int) -> LabelHeader:
        return LabelHeader(key[0], key[1], key[2], 60_000, 0, partition, first, last, labeled, labeled // 2, 0.0,
                           0.0, 0)

    summaries = [(header(KEY, 0, 0, 9, 10), labelled(p, 10, 21).to_bytes()),
                 (header(KEY, 1, 0, 19, 20), labelled(p, 20, 22).to_bytes()),
                 (header(other, 0, 10, 14, 5), labelled(p, 5, 23).to_bytes()),
                 (header(KEY, 0, 10, 24, 15), labelled(p, 15, 24).to_bytes()),
                 (header(KEY, 0, 0, 9, 10), labelled(p, 10, 21).to_bytes())]  # a replay of the first
    found = []
    for together in (True, False):
        with store.opened(f"chdb://{tmp_path / f'ch-{together}'}") as client:
            windows = LabelWindows(client, book_with(p, labelled(p, 400, 6)), lambda _m, _v: CONFIG)
            for batch in ([summaries] if together else [[s] for s in summaries]):
                windows.apply(batch)
            _, states = store.query(client, "SELECT count() FROM driftline.label_windows")
            _, revisions = store.query(client, "SELECT uniqExact(revision) FROM driftline.windows")
            _, latest = store.query(client, "SELECT window_start, metric, feature, slice, value, n FROM "
                                            "driftline.windows FINAL ORDER BY ALL")
            restarted = LabelWindows(client, windows.book, lambda _m, _v: CONFIG)
            found.append((states[0][0], revisions[0][0], latest, {k: restarted._load(k) for k in (KEY, other)}))
    (states, revisions, latest, loaded), (states_1, revisions_1, latest_1, loaded_1) = found
    assert (states, revisions) == (3, 2)  # KEY's two partitions in one insert, other's one; one revision each
    assert (states_1, revisions_1) == (4, 4)
    assert latest == latest_1 and loaded == loaded_1
    assert loaded[KEY][0].labeled == 25 and loaded[KEY][1].labeled == 20 and loaded[other][0].labeled == 5


def test_label_state_round_trips_through_the_store_and_the_newest_offset_wins(chdb_client):
    assert tuple(f.name for f in fields(PartState)) == store.LABEL_STATE_FIELDS  # stored by field name
    mine = PartState(9, 10, 7, 1.5, 2.25, 1, 3, b"\x00\xff\x80 not utf-8")
    other = PartState(4, 3, 3)
    store.insert_label_state(chdb_client, KEY, {0: asdict(mine), 2: asdict(other)})
    store.insert_label_state(chdb_client, (KEY[0], KEY[1], KEY[2] + 60_000), {0: asdict(PartState(1, 1))})
    store.insert_label_state(chdb_client, KEY, {0: asdict(replace(mine, last_offset=5, labeled=2))})  # a replay
    store.insert_label_state(chdb_client, KEY, {0: asdict(mine), 2: asdict(other)})  # the same states: stored once
    loaded = {partition: PartState(**state) for partition, state in store.load_label_state(chdb_client, KEY).items()}
    assert loaded == {0: mine, 2: other}
    _, copies = store.query(chdb_client, "SELECT count() FROM driftline.label_windows WHERE last_offset = 9")
    assert copies == [(1,)]
    assert store.load_label_state(chdb_client, ("fraud", "4", KEY[2])) == {}


def test_window_count_is_the_latest_count_row_of_that_window_only(chdb_client):
    assert store.window_count(chdb_client, KEY) is None  # not written yet
    first = to_rows(KEY, 60_000, [Finding("count", 150.0, None, False), Finding("labels", 7.0, None, False)], 150)
    store.insert_windows(chdb_client, first, token="w|r0")
    store.insert_windows(chdb_client, first, token="w|r0")  # a replayed close: stored once
    store.insert_windows(chdb_client, to_rows(("fraud", "3", KEY[2] + 60_000), 60_000,
                                              [Finding("count", 99.0, None, False)], 99), token="next|r0")
    assert store.window_count(chdb_client, KEY) == 150
    store.insert_windows(chdb_client, to_rows(KEY, 60_000, [Finding("count", 160.0, None, False)], 160, revision=1),
                         token="w|r1")
    store.insert_windows(chdb_client, to_rows(KEY, 60_000, [Finding("count", 170.0, None, False)], 170), token="w|x")
    assert store.window_count(chdb_client, KEY) == 160  # the latest revision: neither the first, last, least nor most
    _, copies = store.query(chdb_client, "SELECT count() FROM driftline.windows WHERE metric = 'labels'")
    assert copies == [(1,)]


def test_window_rows_land_in_the_columns_they_name(chdb_client):
    finding = Finding("psi", 0.31, 0.2, True, feature="amount", slice="region=eu", p_value=0.01,
                      detail={"n": 77, "bins": [1, 2]})
    (row,) = to_rows(KEY, 60_000, [finding], 0, "ref-1", "cfg-2", 4)
    store.insert_windows(chdb_client, [row], token="psi")
    names, (stored,) = store.query(chdb_client, "SELECT * EXCEPT written_at FROM driftline.windows")
    assert dict(zip(names, stored, strict=True)) == {
        **dict(zip(store.WINDOW_COLUMNS, row, strict=True)),
        "window_start": stored[names.index("window_start")], "window_end": stored[names.index("window_end")]}
    assert [names.index("window_start"), names.index("window_end")] == [2, 3]
    assert stored[2].timestamp() * 1000 == KEY[2] and stored[3].timestamp() * 1000 == KEY[2] + 60_000


def test_the_demo_summary_is_one_row_per_minute_of_the_model_version(chdb_client):
    findings = [Finding("count", 500.0, None, False), Finding("ks", 0.41234, 0.1, True, feature="age"),
                Finding("accuracy", 0.8766, None, False)]
    store.insert_windows(chdb_client, to_rows(KEY, 60_000, findings, 500), token="demo")
    store.insert_windows(chdb_client, to_rows(("fraud", "4", KEY[2]), 60_000, findings, 500), token="other")
    names, rows = store.demo_summary(chdb_client, "fraud", "3")
    assert names[:3] == ["window", "events", "ks_age"]
    (row,) = rows
    found = dict(zip(names, row, strict=True))
    assert (found["events"], found["ks_age"], found["age_drift"], found["accuracy"]) == (500.0, 0.412, 1, 0.877)


def test_label_windows_keep_a_bounded_number_of_states_and_read_the_others_back(tmp_path: Path, monkeypatch):
    """A merge worker keeps the label states of the windows it used last only (it kept every window it ever
    saw, ~120 KB each); a window let go and labelled again is read back from the store, and the rows and
    states are those of a worker that kept everything."""
    p = profile(1.0)
    keys = [(KEY[0], KEY[1], KEY[2] + i * 60_000) for i in range(4)]

    def header(key: tuple[str, str, int], first: int, last: int) -> LabelHeader:
        return LabelHeader(key[0], key[1], key[2], 60_000, 0, 0, first, last, last - first + 1, 1, 0.0, 0.0, 0)

    batches = [[(header(k, 0, 9), labelled(p, 10, 30 + i).to_bytes())] for i, k in enumerate(keys)]
    batches.append([(header(keys[0], 10, 19), labelled(p, 10, 40).to_bytes())])  # labelled again, once let go
    found = []
    for bound in (2, 1000):
        monkeypatch.setattr(label_windows, "MAX_WINDOWS", bound)
        with store.opened(f"chdb://{tmp_path / f'ch-{bound}'}") as client:
            windows = LabelWindows(client, book_with(p, labelled(p, 400, 6)), lambda _m, _v: CONFIG)
            for batch in batches:
                windows.apply(batch)
                assert len(windows.state) <= bound and len(windows.counts) <= bound
            _, latest = store.query(client, "SELECT window_start, metric, feature, slice, value, n FROM "
                                            "driftline.windows FINAL ORDER BY ALL")
            found.append((latest, LabelWindows(client, windows.book, lambda _m, _v: CONFIG)._load(keys[0])))
    assert found[0] == found[1] and found[0][1][0].labeled == 20
