"""An unreachable partition is not a quiet one: after a broker outage or a leader change, wall-clock time
closes a partition's windows only once it has been seen quiet for ``idle_partition_seconds`` since it answered.

Producers (the SDK) hold the partition's records while it is unreachable; advancing at once when it answers
again would make those records late. White-box: the summarize stage's idle check with a fake consumer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from driftline.streams.config.settings import load_settings
from driftline.streams.stages.summarize_stage import SummarizeStage, _PartitionState


@dataclass
class FakeConsumer:
    reachable: bool = False
    high: int = 10

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float, cached: bool) -> tuple[int, int]:
        if not self.reachable:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))
        return 0, self.high

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.high) for tp in tps]  # caught up


@dataclass
class FakeWindows:
    advanced: list[int] = field(default_factory=list)
    next_offset: int | None = None

    def advance_to(self, now_ms: int) -> None:
        self.advanced.append(now_ms)


def test_a_partition_that_was_unreachable_waits_its_idle_time_again():
    consumer = FakeConsumer()
    windows = FakeWindows()
    stage = object.__new__(SummarizeStage)
    stage.settings = load_settings(idle_partition_seconds=5)
    stage.clock = time.time
    stage.source = "t.predictions"
    stage.consumer = consumer
    state = _PartitionState(windows=windows, wait=None, last_record_wall=time.monotonic() - 60)  # type: ignore[arg-type]
    stage.parts = {0: state}

    stage._advance_idle()  # the broker is away: nothing can be said about the partition
    assert windows.advanced == []
    consumer.reachable = True
    stage._advance_idle()  # back, caught up, but quiet for less than 5 s since it answered
    assert windows.advanced == []
    state.last_record_wall -= 5.0  # 5 s later, still nothing new
    stage._advance_idle()
    assert len(windows.advanced) == 1
