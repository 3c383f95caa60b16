"""What a delayed label needs of its prediction, kept per input partition until the label arrives.

Predictions and labels are keyed by ``prediction_id`` and partitioned alike (murmur2), so partition p of
the labels topic only ever needs partition p's predictions. The store is a bounded in-memory map backed
by a changelog topic (one record per consumed batch, partitioned like the input): a worker that takes
over partition p reads that changelog partition back. Entries older than the maximum label delay (in
event time) are dropped, as are the oldest beyond the size bound; labels that find no prediction are
counted (``labels_unmatched``), never silently lost.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, Literal, NamedTuple, get_type_hints

import orjson

from driftline.errors import InvalidRecord
from driftline.streams.pipeline import internal


class JoinEntry(NamedTuple):
    model_id: str
    model_version: str
    ts_ms: int
    label: str | None
    score: float | None
    value: float | None
    segments: tuple[tuple[str, str], ...] | None  # (name, value) pairs, not a dict: see PartitionJoinStore


def segment_pairs(segments: dict[str, str] | list[list[str]] | None) -> tuple[tuple[str, str], ...] | None:
    """A prediction's segments (or their changelog form) as a JoinEntry holds them."""
    if not segments:
        return None
    return tuple(segments.items()) if isinstance(segments, dict) else tuple(map(tuple, segments))  # type: ignore[misc]


_TS = itemgetter(JoinEntry._fields.index("ts_ms"))
# A changelog row: JoinEntry's fields, its segments as [name, value] lists.
_ROW_HINTS = {**get_type_hints(JoinEntry), "segments": list[list[str]] | None}


class PartitionJoinStore:
    """Insertion-ordered map prediction_id -> JoinEntry with an event-time TTL and a size bound.

    Entries are kept as plain tuples of strings, numbers and tuples (a JoinEntry on the way out): the
    garbage collector stops scanning such tuples, and a worker holds millions of them for hours.
    """

    def __init__(self, ttl_ms: int, max_entries: int) -> None:
        self.ttl_ms = ttl_ms
        self.max_entries = max_entries
        self.entries: dict[str, tuple[Any, ...]] = {}
        self.max_ts_ms = 0
        self.evicted = 0

    def put_many(self, entries: Mapping[str, tuple[Any, ...]]) -> None:
        """Add a batch (a prediction id seen again moves to the back, as if new)."""
        for pid in entries.keys() & self.entries.keys():
            del self.entries[pid]
        self.entries.update(entries)
        self.max_ts_ms = max(self.max_ts_ms, max(map(_TS, entries.values()), default=0))
        excess = len(self.entries) - self.max_entries
        if excess > 0:
            for pid in list(itertools.islice(self.entries, excess)):
                del self.entries[pid]
            self.evicted += excess

    def pop(self, prediction_id: str) -> JoinEntry | None:
        entry = self.entries.pop(prediction_id, None)
        return None if entry is None else JoinEntry._make(entry)

    def expire(self, floor_ms: int | None = None) -> int:
        """Drop entries older than the TTL (entries are close to event-time order, so scan from the front).

        ``floor_ms``: the event time the labels still to be read start from, when they trail the predictions;
        nothing those labels may claim is dropped.
        """
        horizon = (self.max_ts_ms if floor_ms is None else min(self.max_ts_ms, floor_ms)) - self.ttl_ms
        # one pass to count, then the deletes: a dict iterated again after each delete from its front walks
        # every slot deleted before (CPython keeps them until it resizes), quadratic in the entries expired
        dropped = 0
        for entry in self.entries.values():
            if _TS(entry) >= horizon:
                break
            dropped += 1
        for pid in list(itertools.islice(self.entries, dropped)):
            del self.entries[pid]
        self.evicted += dropped
        return dropped

    def apply(self, block: bytes | None) -> None:
        """Replay one changelog record: ``{"put": {pid: entry}, "joined": [pid, ...]}``.

        Checked whole before anything is applied (`streams.pipeline.internal`): a record that is not one
        raises `InvalidRecord` and leaves the store as it was.
        """
        data = internal.load_object(block, "join-state record")
        internal.check(data, dict[Literal["put", "joined"], Any], "join-state record")
        internal.check(data.get("joined", []), list[str], "join-state record.joined")
        put = data.get("put", {})
        internal.check(put, dict[str, list[Any]], "join-state record.put")
        for pid, row in put.items():
            if len(row) != len(_ROW_HINTS):
                raise InvalidRecord(f"join-state record.put.{pid}: {len(row)} fields, not {len(_ROW_HINTS)}")
            for value, (name, hint) in zip(row, _ROW_HINTS.items(), strict=True):
                internal.check(value, hint, f"join-state record.put.{pid}.{name}")
            if row[6] is not None and any(len(pair) != 2 for pair in row[6]):
                raise InvalidRecord(f"join-state record.put.{pid}.segments: (name, value) pairs expected")
        self.put_many({pid: (*row[:6], segment_pairs(row[6])) for pid, row in put.items()})
        for pid in data.get("joined", []):
            self.entries.pop(pid, None)


CHANGELOG_BLOCK_BYTES = 1_048_576  # well under the producer's 4 MiB message limit


def changelog_block(put: Mapping[str, tuple[Any, ...]], joined: list[str]) -> bytes:
    return orjson.dumps({"put": put, "joined": joined}, default=tuple)


def changelog_blocks(put: Mapping[str, tuple[Any, ...]], joined: list[str], max_bytes: int = CHANGELOG_BLOCK_BYTES
                     ) -> list[bytes]:
    """One checkpoint's changelog records, each at most ``max_bytes`` (unless one entry alone is larger).

    A worker catching up on a backlog remembers tens of thousands of predictions per partition between two
    checkpoints, past Kafka's message size in one record. Split, the puts come first and the joined ids after
    them, so that a replay, applying the records in order, leaves what the one record would.
    """
    block = changelog_block(put, joined)
    if len(block) <= max_bytes:
        return [block]
    # entries are much alike in size: cut the puts into as many pieces as the whole needs (+10 %), each encoded once
    pieces = math.ceil(len(block) * 1.1 / max_bytes)
    return (_pieces(lambda items: changelog_block(dict(items), []), list(put.items()), max_bytes, pieces)
            + _halves(lambda pids: changelog_block({}, pids), joined, max_bytes))  # ids alone: mostly one block


def _pieces(encode: Callable[[list[Any]], bytes], items: list[Any], max_bytes: int, pieces: int) -> list[bytes]:
    step = max(1, math.ceil(len(items) / pieces))
    return [block for i in range(0, len(items), step) for block in _halves(encode, items[i:i + step], max_bytes)]


def _halves(encode: Callable[[list[Any]], bytes], items: list[Any], max_bytes: int) -> list[bytes]:
    if not items:
        return []
    block = encode(items)
    if len(block) <= max_bytes or len(items) == 1:
        return [block]
    half = len(items) // 2
    return _halves(encode, items[:half], max_bytes) + _halves(encode, items[half:], max_bytes)
