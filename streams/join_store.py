"""What a delayed label needs of its prediction, kept per input partition until the label arrives.

Predictions and labels are keyed by ``prediction_id`` and partitioned alike (murmur2), so partition p of
the labels topic only ever needs partition p's predictions. The store is a bounded in-memory map backed
by a changelog topic (one record per consumed batch, partitioned like the input): a worker that takes
over partition p reads that changelog partition back. Entries older than the maximum label delay (in
event time) are dropped, as are the oldest beyond the size bound; labels that find no prediction are
counted (``labels_unmatched``), never silently lost.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class JoinEntry:
    model_id: str
    model_version: str
    ts_ms: int
    label: str | None
    score: float | None
    value: float | None
    segments: dict[str, str]

    def encode(self) -> list[Any]:
        return [self.model_id, self.model_version, self.ts_ms, self.label, self.score, self.value, self.segments]

    @classmethod
    def decode(cls, row: list[Any]) -> JoinEntry:
        model_id, model_version, ts_ms, label, score, value, segments = row
        return cls(model_id, model_version, int(ts_ms), label, score, value, dict(segments))


class PartitionJoinStore:
    """Insertion-ordered map prediction_id -> JoinEntry with an event-time TTL and a size bound."""

    def __init__(self, ttl_ms: int, max_entries: int) -> None:
        self.ttl_ms = ttl_ms
        self.max_entries = max_entries
        self.entries: OrderedDict[str, JoinEntry] = OrderedDict()
        self.max_ts_ms = 0
        self.evicted = 0

    def put(self, prediction_id: str, entry: JoinEntry) -> None:
        self.entries[prediction_id] = entry
        self.entries.move_to_end(prediction_id)
        self.max_ts_ms = max(self.max_ts_ms, entry.ts_ms)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
            self.evicted += 1

    def pop(self, prediction_id: str) -> JoinEntry | None:
        return self.entries.pop(prediction_id, None)

    def expire(self) -> int:
        """Drop entries older than the TTL (entries are close to event-time order, so scan from the front)."""
        horizon = self.max_ts_ms - self.ttl_ms
        dropped = 0
        while self.entries:
            pid, entry = next(iter(self.entries.items()))
            if entry.ts_ms >= horizon:
                break
            del self.entries[pid]
            dropped += 1
        self.evicted += dropped
        return dropped

    def apply(self, block: bytes) -> None:
        """Replay one changelog record: ``{"put": {pid: entry}, "joined": [pid, ...]}``."""
        data = orjson.loads(block)
        for pid, row in data.get("put", {}).items():
            self.put(pid, JoinEntry.decode(row))
        for pid in data.get("joined", []):
            self.entries.pop(pid, None)


def changelog_block(put: dict[str, JoinEntry], joined: list[str]) -> bytes:
    return orjson.dumps({"put": {pid: e.encode() for pid, e in put.items()}, "joined": joined})
