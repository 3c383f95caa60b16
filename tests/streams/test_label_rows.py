"""Label windows across a profile switch: label summaries of one window made against different profiles
never stop the merge stage; the one made against the window's profile is kept, the rest reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from driftline.detectors.summaries import ReferenceProfile, WindowSummary
from driftline.streams import store
from driftline.streams.config.model_config import MonitoringConfig
from driftline.streams.pipeline.envelope import LabelHeader
from driftline.streams.pipeline.label_rows import PartState, combine_label_summaries, label_rows
from driftline.streams.references.book import DISCOVERY, Reference, ReferenceBook
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

    windows.apply(header(0, 9, 10), WindowSummary.empty(DISCOVERY).to_bytes())  # before the reference
    book.add(Reference("fraud", "3", "auto-x", "h", "auto:5-windows", 0, p, labelled(p, 200, 10)))
    windows.apply(header(10, 29, 20), labelled(p, 20, 11).to_bytes())  # after it: no crash, nothing lost
    stray = labelled(profile(3.0), 15, 12)
    windows.apply(header(30, 44, 15), stray.to_bytes())  # made against another profile: reported
    _, found = store.query(chdb_client, "SELECT metric, value FROM driftline.windows FINAL "
                                        "WHERE metric IN ('labels', 'merge_conflict')")
    assert dict(found) == {"labels": 45.0, "merge_conflict": 15.0}
    restarted = LabelWindows(chdb_client, book, lambda _m, _v: CONFIG)  # state read back from the store
    assert restarted._load(KEY)[0].conflicts == 15
    assert WindowSummary.from_bytes(restarted._load(KEY)[0].summary).classifier.labeled == 20  # type: ignore[union-attr]
