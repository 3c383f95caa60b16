"""Keeps a partition's predictions and labels within reach of each other in event time while a worker catches up.

A label joins only if its prediction is in the join store when the label is read. A worker that keeps up reads
both topics as they arrive, labels trailing their predictions by the label delay. A worker behind its traffic
reads the two topics at whatever pace the fetches give, and without pacing lost most labels of a backlog:

- labels far ahead of their predictions wait for them (`LabelJoiner.retry`); a labels partition with
  ``label_join.MAX_WAITING`` waiting labels is paused until its predictions catch up (`LabelJoiner.crowded`);
- labels far behind would find their predictions expired (the store keeps ``max_label_delay_seconds`` of event
  time; measured before this rule: 2.0 M of 5 M labels unmatched in a 10 M-event backlog). So while a labels
  partition has records left to read, its store expires nothing its labels may still claim (expiry up to the
  labels' event time), and a predictions partition more than half the label delay ahead of its labels is
  paused (`predictions_ahead`) until they are within a quarter of it, or have nothing left to read.

Both rules act on partitions the summarize stage holds; a partition paused for either reason is resumed when it
is revoked (its records are read again from the committed offset by the next owner).
"""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from driftline.streams.stages.label_join import LabelJoiner, LabelPartition


def predictions_ahead(predictions_ms: int | None, labels_ms: int | None, labels_left: bool, delay_ms: int,
                      paused: bool) -> bool:
    """Whether a predictions partition is to wait for its labels partition (``paused``: it waits now).

    >>> predictions_ahead(1_000_000, 500_000, True, 600_000, False)  # 500 s ahead: more than half the delay
    True
    >>> predictions_ahead(1_000_000, 800_000, True, 600_000, True)  # 200 s: still more than a quarter
    True
    >>> predictions_ahead(1_000_000, 500_000, False, 600_000, True)  # the labels are all read
    False
    """
    if not labels_left or predictions_ms is None:
        return False
    if labels_ms is None:  # nothing read of a labels partition that has records: read them first
        return True
    return predictions_ms - labels_ms > (delay_ms // 4 if paused else delay_ms // 2)


def labels_left(consumer: Consumer, topic: str, partition: int, part: LabelPartition) -> bool | None:
    """Whether the labels partition has records beyond those read (the consumer's last-fetched end offset);
    None while that end is unknown (not fetched yet, or forgotten over a broker outage or a leader change).

    A paused labels partition (too many of its labels wait) counts as having some: nothing is fetched for it, so
    its cached end offset stops moving, and taken at its word the join would expire what its labels still claim.
    While the end is unknown the join store expires nothing (a worker starting on a backlog fetched predictions
    first, and expired them before their labels' first fetch came back), but no predictions partition is paused
    for it: a labels topic without records may stay unknown for a while after a broker comes back.
    """
    if part.paused:
        return True
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
    if high < 0:
        return None
    return high > (part.next_offset if part.next_offset is not None else max(low, 0))


def pace_labels(consumer: Consumer, topic: str, joiner: LabelJoiner) -> None:
    """Pause the labels partitions whose labels wait in numbers; resume those whose waiting labels went."""
    pause, resume = joiner.crowded()
    if pause:
        consumer.pause([TopicPartition(topic, p) for p in pause])
    if resume:
        consumer.resume([TopicPartition(topic, p) for p in resume])
