"""The label-join store: bounded, expires by event time, and rebuilds exactly from its changelog records."""

from __future__ import annotations

from streams.join_store import JoinEntry, PartitionJoinStore, changelog_block


def entry(ts_ms: int, label: str | None = "ok") -> JoinEntry:
    return JoinEntry("m", "1", ts_ms, label, 0.3, None, {"region": "eu"})


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
