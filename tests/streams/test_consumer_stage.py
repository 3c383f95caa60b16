"""The stage loop: a stop while the store is down ends it quietly, and a failed step commits nothing on close."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from driftline.errors import StoreError
from driftline.streams import store_retry
from driftline.streams.stages.consumer import ConsumerStage


class _Consumer:
    """Enough of confluent-kafka's consumer: closing it revokes the assignment, as the real one does."""

    def __init__(self) -> None:
        self.commits: list[Any] = []
        self.on_revoke: Any = None

    def subscribe(self, _topics: list[str], on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        self.on_revoke = on_revoke

    def consume(self, num_messages: int, timeout: float) -> list[object]:
        return [object()]

    def commit(self, offsets: list[TopicPartition]) -> None:
        self.commits.append(offsets)

    def close(self) -> None:
        self.on_revoke(self, [TopicPartition("t", 0)])


class _Stage(ConsumerStage):
    def __init__(self, step: Any) -> None:
        super().__init__(_Consumer(), threading.Event(), None, 1)  # type: ignore[arg-type]
        self.step = step

    def subscriptions(self) -> list[str]:
        return ["t"]

    def references_read(self, refs: list[Any]) -> None: ...

    def _process(self, batch: list[Any]) -> None:
        self.step(self)

    def _checkpoint(self, only: set[int] | None = None) -> None:
        self.consumer.commit(offsets=[TopicPartition("t", 0, 1)])  # type: ignore[attr-defined]

    def _on_assign(self, consumer: Any, assigned: list[TopicPartition]) -> None: ...

    def _on_revoke(self, consumer: Any, revoked: list[TopicPartition]) -> None:
        self._checkpoint()

    def _on_lost(self, consumer: Any, lost: list[TopicPartition]) -> None: ...


def test_a_stop_while_the_store_is_down_ends_the_loop_without_a_commit():
    def write_while_stopping(stage: _Stage) -> None:
        def insert_windows() -> None:
            stage.stop.set()  # SIGTERM arrives during the outage
            raise StoreError("writing driftline.windows: Connection refused")

        store_retry.call(insert_windows)

    stage = _Stage(write_while_stopping)
    stage.run()  # returns: the worker stops cleanly
    assert stage.broken and stage.consumer.commits == []  # type: ignore[attr-defined]


def test_a_step_that_fails_half_way_commits_nothing_when_the_consumer_closes():
    def fail(_stage: _Stage) -> None:
        raise RuntimeError("a window popped, not written")

    stage = _Stage(fail)
    with pytest.raises(RuntimeError):
        stage.run()
    assert stage.consumer.commits == []  # type: ignore[attr-defined]
