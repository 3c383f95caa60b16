"""The label join's patience: a label waits for its prediction while the predictions are read behind it.

A worker catching up on a backlog reads the labels topic far faster than the predictions topic. Before, a
label whose prediction was not read within ``label_wait_seconds`` of wall-clock time was counted unmatched,
so a worker started behind its traffic lost most of its labels (106,887 of 150,000 in the pipeline benchmark).
"""

from __future__ import annotations

from driftline.streams import metrics
from driftline.streams.config.settings import load_settings
from driftline.streams.pipeline.decode import Label, decode_prediction
from driftline.streams.pipeline.summarize import PredictionSummarizer
from driftline.streams.stages import label_join
from driftline.streams.stages.join_pacing import labels_left
from driftline.streams.stages.label_join import LabelJoiner


def _joiner() -> LabelJoiner:
    joiner = LabelJoiner(load_settings(label_wait_seconds=0), PredictionSummarizer().new)
    joiner.parts[0] = joiner.new_partition(None)
    return joiner


def _prediction(i: int, ts_ms: int):
    return decode_prediction(b'{"schema_version":1,"prediction_id":"p%d","model_id":"m","model_version":"1",'
                             b'"ts":%d,"features":{"x":1.5},"prediction":{"score":0.5,"label":"a"}}' % (i, ts_ms))


def _unmatched() -> float:
    return metrics.LABELS_UNMATCHED._value.get()


def test_a_label_read_before_its_prediction_waits_until_the_predictions_are_read_past_it():
    joiner = _joiner()
    part = joiner.parts[0]
    part.waiting = [(7, Label("p1", "m", 90_000, "a"), 0.0), (8, Label("gone", "m", 95_000, "a"), 0.0)]
    before = _unmatched()
    joiner.retry({0: None})  # nothing read yet on the predictions partition: both wait, however long ago seen
    joiner.retry({0: 60_000})  # read up to 60 s: still behind both labels
    assert [w[0] for w in part.waiting] == [7, 8] and _unmatched() == before
    joiner.remember(0, [_prediction(1, 30_000)])
    joiner.retry({0: 92_000})  # p1 is there now; "gone" (95 s) is still ahead of the predictions
    assert [w[0] for w in part.waiting] == [8] and part.joined == ["p1"]
    assert list(part.deltas) == [("m", "1", 0)] and part.deltas[("m", "1", 0)].labeled == 1
    joiner.retry({0: 95_000})  # read up to its event time and waited label_wait_seconds: unmatched
    assert part.waiting == [] and _unmatched() == before + 1
    assert part.unmatched == {("m", 60_000): [8]}


def test_labels_of_a_partition_not_assigned_here_wait_by_the_wall_clock_only():
    joiner = _joiner()
    joiner.parts[0].waiting = [(3, Label("nowhere", "m", 90_000, "a"), 0.0)]
    joiner.retry({})
    assert joiner.parts[0].waiting == [] and joiner.parts[0].unmatched == {("m", 60_000): [3]}


def test_a_crowded_label_partition_is_paused_until_half_its_waiting_labels_are_gone(monkeypatch):
    monkeypatch.setattr(label_join, "MAX_WAITING", 10)
    joiner = _joiner()
    part = joiner.parts[0]
    part.waiting = [(i, Label(f"p{i}", "m", 90_000, "a"), 0.0) for i in range(10)]
    assert joiner.crowded() == ([0], []) and joiner.crowded() == ([], [])
    joiner.remember(0, [_prediction(i, 30_000) for i in range(5)])
    joiner.retry({0: 40_000})
    assert len(part.waiting) == 5 and joiner.crowded() == ([], [])  # 5 is not under half of 10
    joiner.remember(0, [_prediction(5, 30_000)])
    joiner.retry({0: 40_000})
    assert len(part.waiting) == 4 and joiner.crowded() == ([], [0]) and not part.paused


class _Watermarks:
    def __init__(self, low: int, high: int) -> None:
        self.offsets = (low, high)

    def get_watermark_offsets(self, _tp: object, cached: bool = False) -> tuple[int, int]:
        assert cached  # no broker round trip per partition and checkpoint
        return self.offsets


def test_labels_are_left_to_read_while_the_partition_is_behind_its_end_unknown_or_paused():
    part = _joiner().parts[0]
    part.next_offset = 40
    assert labels_left(_Watermarks(0, 100), "labels", 0, part)  # type: ignore[arg-type]
    assert not labels_left(_Watermarks(0, 40), "labels", 0, part)  # type: ignore[arg-type]
    assert labels_left(_Watermarks(-1001, -1001), "labels", 0, part) is None  # type: ignore[arg-type]  # unknown
    part.paused = True  # nothing fetched for it: its cached end is stale
    assert labels_left(_Watermarks(0, 40), "labels", 0, part)  # type: ignore[arg-type]
