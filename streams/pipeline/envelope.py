"""Summarize stage -> merge stage messages on the internal summaries topic: a JSON header and a summary body.

Framing: 4-byte big-endian header length, the header (orjson), then the summary bytes (may be empty).
Watermarks travel on the same topic, to every partition, so the merge stage sees each input partition's progress
after (in log order) every summary that partition emitted before it. A watermark carries the partition's
event time; each window's own allowed lateness (in its header) is subtracted from it, since models have
their own lateness.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass

import orjson

_LEN = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class SummaryHeader:
    model_id: str
    model_version: str
    window_start_ms: int
    window_size_ms: int
    lateness_ms: int
    partition: int
    partitions: int
    first_offset: int
    last_offset: int
    n: int
    late_events: int
    late_oldest_ms: int | None


@dataclass(frozen=True, slots=True)
class LabelHeader:
    """Labels joined in one input partition since the last checkpoint, for one prediction window.

    ``model_version`` is empty for labels that found no prediction (``unmatched``), counted under the
    label's own event-time window.
    """

    model_id: str
    model_version: str
    window_start_ms: int
    window_size_ms: int
    lateness_ms: int
    partition: int
    first_offset: int
    last_offset: int
    labeled: int
    correct: int
    abs_err: float
    sq_err: float
    unmatched: int


@dataclass(frozen=True, slots=True)
class TickHeader:
    """One tick (``streams.pipeline.ticks``) of one model version on one input partition; the body is its
    `TickSummary`. It closes in the merge stage on the same watermarks as the windows, with its own lateness."""

    model_id: str
    model_version: str
    tick_start_ms: int
    tick_size_ms: int
    lateness_ms: int
    partition: int
    partitions: int
    first_offset: int
    last_offset: int
    n: int


@dataclass(frozen=True, slots=True)
class Watermark:
    partition: int
    partitions: int
    event_time_ms: int


Header = SummaryHeader | LabelHeader | TickHeader | Watermark
_KINDS: dict[str, type[Header]] = {"summary": SummaryHeader, "labels": LabelHeader, "tick": TickHeader,
                                   "watermark": Watermark}


def encode(header: Header, body: bytes = b"") -> bytes:
    kind = next(k for k, cls in _KINDS.items() if isinstance(header, cls))
    head = orjson.dumps({"type": kind, **asdict(header)})
    return _LEN.pack(len(head)) + head + body


def decode(raw: bytes) -> tuple[Header, bytes]:
    """The header and body of one framed message; ``ValueError`` saying what is wrong with any other bytes."""
    if len(raw) < _LEN.size:
        raise ValueError(f"envelope of {len(raw)} bytes is shorter than its {_LEN.size}-byte length prefix")
    (size,) = _LEN.unpack_from(raw)
    if len(raw) < _LEN.size + size:
        raise ValueError(f"envelope header of {size} bytes runs past the end of a {len(raw)}-byte message")
    try:
        head = orjson.loads(raw[_LEN.size : _LEN.size + size])
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"envelope header is not JSON: {exc}") from exc
    if not isinstance(head, dict):
        raise ValueError(f"envelope header is not a JSON object: {head!r:.80}")
    kind = head.pop("type", None)
    if kind not in _KINDS:
        raise ValueError(f"unknown envelope type {kind!r}")
    try:
        return _KINDS[kind](**head), raw[_LEN.size + size :]
    except TypeError as exc:  # missing or unexpected fields: a header from another version of the stage
        raise ValueError(f"{kind} envelope header does not fit: {exc}") from exc
