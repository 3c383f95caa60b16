"""Offsets are committed only once every record produced before their checkpoint is delivered."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, TopicPartition

from driftline.streams.kafka.kafka_io import DeliveryFailed, DeliveryLedger


def test_a_checkpoint_waits_for_its_own_and_every_earlier_epoch():
    ledger = DeliveryLedger()
    first = [ledger.callback(), ledger.callback()]
    ledger.seal([TopicPartition("p", 0, 10), TopicPartition("p", 1, 7)])
    second = ledger.callback()
    ledger.seal([TopicPartition("p", 0, 20)])
    second(None, None)  # the later checkpoint's record is acknowledged first
    assert ledger.ready() == []
    first[0](None, None)
    assert ledger.ready() == []
    first[1](None, None)
    assert {(tp.partition, tp.offset) for tp in ledger.ready()} == {(0, 20), (1, 7)}
    assert ledger.ready() == []


def test_a_checkpoint_with_nothing_produced_is_ready_at_once():
    ledger = DeliveryLedger()
    ledger.seal([TopicPartition("p", 3, 5)])
    assert [(tp.partition, tp.offset) for tp in ledger.ready()] == [(3, 5)]


def test_a_failed_delivery_stops_all_later_commits():
    ledger = DeliveryLedger()
    lost = ledger.callback()
    ledger.seal([TopicPartition("p", 0, 10)])
    ok = ledger.callback()
    ledger.seal([TopicPartition("p", 0, 20)])
    ok(None, None)
    lost(KafkaError(KafkaError._MSG_TIMED_OUT), None)
    with pytest.raises(DeliveryFailed, match="not committing"):
        ledger.ready()


def test_offsets_of_lost_partitions_are_never_committed():
    ledger = DeliveryLedger()
    ledger.seal([TopicPartition("p", 0, 10), TopicPartition("p", 1, 4), TopicPartition("labels", 1, 9)])
    ledger.forget("p", {1})
    assert {(tp.topic, tp.partition) for tp in ledger.ready()} == {("p", 0), ("labels", 1)}
