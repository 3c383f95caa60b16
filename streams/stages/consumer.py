"""The loop both stages run: follow the references, consume a batch, process it, checkpoint every second."""

from __future__ import annotations

import gc
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from driftline.streams import store_retry
from driftline.streams.references.book import Reference
from driftline.streams.references.topic import ReferenceFollower

CHECKPOINT_INTERVAL_S = 1.0
log = logging.getLogger("driftline.consumer")


def records(batch: list[Message]) -> Iterator[Message]:
    """The batch's records; consume errors are logged (end-of-partition events silently) and skipped."""
    for msg in batch:
        err = msg.error()
        if err is None:
            yield msg
        elif err.code() != KafkaError._PARTITION_EOF:
            log.warning("consume error: %s", err)


def freeze_startup_heap() -> None:
    """Take what is alive at start (faust, torch, numpy: millions of objects) out of the collector's scans.

    Every full collection walks every tracked object; a worker allocates a lot per second, so full
    collections are frequent and would mostly re-walk the libraries' import-time objects.
    """
    gc.collect()
    gc.freeze()


class ConsumerStage(ABC):
    def __init__(self, consumer: Consumer, stop: threading.Event, references: ReferenceFollower | None,
                 batch_size: int) -> None:
        self.consumer = consumer
        self.stop = stop
        self.references = references
        self.batch_size = batch_size
        # set when a step failed half-way: what it left in memory must not be committed (see ``_revoked``)
        self.broken = False

    def run(self) -> None:
        """Consume until ``stop``; a stop while the store is down ends the loop without a commit."""
        self.consumer.subscribe(self.subscriptions(), on_assign=self._on_assign, on_revoke=self._revoked,
                                on_lost=self._on_lost)
        try:
            with store_retry.stopping_on(self.stop):
                self._loop()
        except store_retry.Abandoned as exc:
            self.broken = True
            log.warning("%s; the records after the last commit are read again after a restart", exc)
        except BaseException:
            self.broken = True
            raise
        finally:
            self.close()

    def _loop(self) -> None:
        if self.references is not None:
            self.references_read(self.references.catch_up())
        last_checkpoint = time.monotonic()
        while not self.stop.is_set():
            if self.references is not None:
                self.references_read(self.references.poll())
            batch = self.consumer.consume(num_messages=self.batch_size, timeout=0.2)
            if batch:
                self._process(batch)
            if time.monotonic() - last_checkpoint >= CHECKPOINT_INTERVAL_S:
                self._checkpoint()
                last_checkpoint = time.monotonic()
        self._checkpoint()

    def _revoked(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        # Closing the consumer revokes its partitions, and a stage checkpoints on revoke; after a failed step
        # (a window popped but not written, say) that checkpoint would commit past what was lost.
        if not self.broken:
            self._on_revoke(consumer, revoked)

    @abstractmethod
    def references_read(self, refs: list[Reference]) -> None:
        """New references arrived (the follower's book already holds them)."""

    def close(self) -> None:
        self.consumer.close()

    @abstractmethod
    def subscriptions(self) -> list[str]: ...

    @abstractmethod
    def _process(self, batch: list[Message]) -> None: ...

    @abstractmethod
    def _checkpoint(self, only: set[int] | None = None) -> None: ...

    @abstractmethod
    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None: ...

    @abstractmethod
    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None: ...

    @abstractmethod
    def _on_lost(self, consumer: Consumer, lost: list[TopicPartition]) -> None: ...
