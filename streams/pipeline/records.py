"""What makes an input record usable, judged the same way by the summarize stage and the backtest.

Owns the checks on top of decoding that both read paths apply to the predictions topic, and the summarize
stage to the labels topic: the record's key must be its ``prediction_id`` (predictions and labels are
partitioned by it, so a record under another key would never meet its counterpart) and its event time
must be plausible; and the labels topic must have as many partitions as
the predictions topic (partition p of the labels only ever meets partition p's predictions). Kafka
records are taken by their accessors, so this module needs no Kafka client.
"""

from __future__ import annotations

from typing import Protocol

from driftline.streams.pipeline.decode import (
    EventTimeBounds,
    InvalidRecord,
    Label,
    Prediction,
    decode_label,
    decode_prediction,
)


class KafkaRecord(Protocol):
    """The accessors of a consumed record that the checks read (a confluent-kafka ``Message`` has them)."""

    def value(self) -> bytes | None: ...

    def key(self) -> bytes | None: ...

    def timestamp(self) -> tuple[int, int]: ...


def read_prediction(msg: KafkaRecord, event_times: EventTimeBounds, now_ms: int) -> Prediction:
    """The record's prediction; raises `InvalidRecord` (the dead-letter reason) when it breaks the contract.

    >>> from types import SimpleNamespace as Msg
    >>> raw = (b'{"schema_version": 1, "prediction_id": "p1", "model_id": "m", "model_version": "1", "ts": 1000,'
    ...        b' "features": {}, "prediction": {"score": 0.5}}')
    >>> def msg(key): return Msg(value=lambda: raw, key=lambda: key, timestamp=lambda: (1, 1000))
    >>> bounds = EventTimeBounds(60_000, 60_000)
    >>> read_prediction(msg(b"p1"), bounds, 2000).prediction_id
    'p1'
    >>> try:
    ...     read_prediction(msg(b"p2"), bounds, 2000)
    ... except InvalidRecord as exc:
    ...     print(exc)
    record key does not match prediction_id (labels would not join)
    """
    pred = decode_prediction(msg.value())
    _check_key(msg, pred.prediction_id, "labels")
    event_times.check(pred.ts_ms, msg.timestamp()[1], now_ms)
    return pred


def read_label(msg: KafkaRecord, event_times: EventTimeBounds, now_ms: int) -> Label:
    """The record's label; raises `InvalidRecord` (the dead-letter reason) when it breaks the contract."""
    label = decode_label(msg.value())
    _check_key(msg, label.prediction_id, "its prediction")
    event_times.check(label.ts_ms, msg.timestamp()[1], now_ms)
    return label


def _check_key(msg: KafkaRecord, prediction_id: str, counterpart: str) -> None:
    key = msg.key()
    if key is not None and key != prediction_id.encode():
        raise InvalidRecord(f"record key does not match prediction_id ({counterpart} would not join)")


def partition_mismatch(labels: str, n_labels: int, predictions: str, n_predictions: int) -> str | None:
    """Why labels cannot meet their predictions when the two topics' partition counts differ; else None.

    >>> partition_mismatch("labels", 3, "predictions", 3) is None, partition_mismatch("labels", 2, "predictions", 3)
    (True, 'labels has 2 partitions and predictions 3: they must match for labels to meet predictions')
    """
    if n_labels == n_predictions:
        return None
    return f"{labels} has {n_labels} partitions and {predictions} {n_predictions}: they must match for labels to " \
           "meet predictions"
