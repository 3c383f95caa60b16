"""The label-join store: bounded, expires by event time, and rebuilds exactly from its changelog records."""

from __future__ import annotations

import gc

from driftline.streams.pipeline.join_store import (
    JoinEntry,
    PartitionJoinStore,
    changelog_block,
    changelog_blocks,
    segment_pairs,
)


def entry(ts_ms: int, label: str | None = "ok") -> JoinEntry:
    return JoinEntry("m", "1", ts_ms, label, 0.3, None, segment_pairs({"region": "eu"}))


def test_expiry_drops_entries_older_than_the_ttl_in_event_time():
    store = PartitionJoinStore(ttl_ms=1000, max_entries=100)
    store.put_many({"a": entry(0), "b": entry(500), "c": entry(1200)})
    assert store.expire() == 1 and list(store.entries) == ["b", "c"]
    store.put_many({"d": entry(2000)})
    assert store.expire() == 1 and list(store.entries) == ["c", "d"] and store.evicted == 2


def test_the_size_bound_evicts_the_oldest_and_a_repeated_id_counts_as_new():
    store = PartitionJoinStore(ttl_ms=10**9, max_entries=3)
    store.put_many({"a": entry(1), "b": entry(2), "c": entry(3)})
    store.put_many({"a": entry(4), "d": entry(5)})
    assert list(store.entries) == ["c", "a", "d"] and store.evicted == 1
    assert store.pop("a") == entry(4) and store.pop("a") is None


def test_replaying_the_changelog_rebuilds_the_same_store():
    live = PartitionJoinStore(ttl_ms=10**9, max_entries=100)
    blocks = []
    first = {"a": entry(1), "b": entry(2, None)}
    live.put_many(first)
    blocks.append(changelog_block(first, []))
    live.pop("a")
    second = {"c": entry(3)}
    live.put_many(second)
    blocks.append(changelog_block(second, ["a"]))
    restored = PartitionJoinStore(ttl_ms=10**9, max_entries=100)
    for block in blocks:
        restored.apply(block)
    assert restored.entries == live.entries
    assert restored.entries["b"] == entry(2, None)


def test_a_checkpoint_too_big_for_one_record_is_split_and_replays_to_the_same_store():
    """A worker catching up remembers tens of thousands of predictions per checkpoint: one changelog record
    would pass Kafka's message limit (MSG_SIZE_TOO_LARGE stopped the stage). Split, every record fits and the
    replay leaves the store the single record would, ids joined in the same checkpoint included."""
    before = {f"old-{i}": entry(i) for i in range(50)}
    put = {f"p-{i}": entry(100 + i, None if i % 3 else "ok") for i in range(3000)}
    joined = ["old-7", "p-5", "p-2999", *(f"old-{i}" for i in range(20, 40))]
    blocks = changelog_blocks(put, joined, max_bytes=20_000)
    assert len(blocks) > 10 and all(len(b) <= 20_000 for b in blocks)
    assert changelog_blocks(put, joined) == [changelog_block(put, joined)]  # the default limit: one record here
    split, whole = (PartitionJoinStore(ttl_ms=10**9, max_entries=10_000) for _ in range(2))
    for store, records in ((split, blocks), (whole, [changelog_block(put, joined)])):
        store.apply(changelog_block(before, []))
        for block in records:
            store.apply(block)
    assert list(split.entries.items()) == list(whole.entries.items())
    assert "p-5" not in split.entries and "old-7" not in split.entries and len(split.entries) == 50 + 3000 - 23


def test_entries_leave_the_garbage_collectors_watch():
    """Millions of entries stay for hours: scanning them on every full collection would stall the worker."""
    from driftline.streams.config.settings import load_settings
    from driftline.streams.pipeline.decode import decode_prediction
    from driftline.streams.pipeline.summarize import PredictionSummarizer
    from driftline.streams.stages.label_join import LabelJoiner

    joiner = LabelJoiner(load_settings(), PredictionSummarizer().new)
    joiner.parts[0] = joiner.new_partition(None)
    raw = b'{"schema_version":1,"prediction_id":"%d","model_id":"m","model_version":"1","ts":5,' \
          b'"features":{"x":1.5},"prediction":{"score":0.5,"label":"a"}%s}'
    joiner.remember(0, [decode_prediction(raw % (i, b',"segments":{"tier":"gold"}' if i % 2 else b""))
                        for i in range(10)])
    for _ in range(3):  # entry -> segments -> (name, value): a collection may let go one level of nesting
        gc.collect()
    store = joiner.parts[0].store
    assert not any(gc.is_tracked(e) for e in store.entries.values())
    assert store.pop("1").segments == (("tier", "gold"),) and store.pop("0").segments is None
