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

from driftline.detectors import codec
from driftline.detectors.summaries import FORMAT_VERSION
from driftline.errors import InvalidRecord
from driftline.streams.pipeline import internal
from driftline.streams.pipeline.ticks import TickSummary

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
    """The header and body of one framed message; `InvalidRecord` (a ``ValueError``) saying what is wrong
    with any other bytes.

    The boundary of the summaries topic (`streams.pipeline.internal`): every header field is of its type,
    and a body is refused unless it is what its header announces (a summary's framing and checksum, a
    tick's JSON), so nothing foreign is kept to fail a window's merge later.
    """
    if len(raw) < _LEN.size:
        raise InvalidRecord(f"envelope of {len(raw)} bytes is shorter than its {_LEN.size}-byte length prefix")
    (size,) = _LEN.unpack_from(raw)
    if len(raw) < _LEN.size + size:
        raise InvalidRecord(f"envelope header of {size} bytes runs past the end of a {len(raw)}-byte message")
    try:
        head = orjson.loads(raw[_LEN.size : _LEN.size + size])
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"envelope header is not JSON: {exc}") from None
    if not isinstance(head, dict):
        raise InvalidRecord(f"envelope header is not a JSON object: {head!r:.80}")
    kind = head.pop("type", None)
    if kind not in _KINDS:
        raise InvalidRecord(f"unknown envelope type {kind!r:.60}")
    header = internal.typed(_KINDS[kind], head, f"{kind} envelope header")
    body = raw[_LEN.size + size :]
    if isinstance(header, Watermark) and body:
        raise InvalidRecord("a watermark carries no body")
    if isinstance(header, SummaryHeader | LabelHeader) and body:
        internal.decoded(lambda b: codec.verify(b, FORMAT_VERSION, f"{kind} body"), body, f"{kind} body")
    if isinstance(header, TickHeader):
        internal.decoded(TickSummary.from_bytes, body, "tick body")
    return header, body
