"""Stage 1 -> stage 2 messages on the internal summaries topic: a JSON header and an opaque summary body.

Framing: 4-byte big-endian header length, the header (orjson), then the summary bytes (may be empty).
Watermarks travel on the same topic, to every partition, so stage 2 sees each input partition's progress
after (in log order) every summary that partition emitted before it.
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
    partition: int
    partitions: int
    first_offset: int
    last_offset: int
    n: int
    late_events: int
    late_oldest_ms: int | None


@dataclass(frozen=True, slots=True)
class Watermark:
    partition: int
    partitions: int
    watermark_ms: int


def encode(header: SummaryHeader | Watermark, body: bytes = b"") -> bytes:
    kind = "summary" if isinstance(header, SummaryHeader) else "watermark"
    head = orjson.dumps({"type": kind, **asdict(header)})
    return _LEN.pack(len(head)) + head + body


def decode(raw: bytes) -> tuple[SummaryHeader | Watermark, bytes]:
    (size,) = _LEN.unpack_from(raw)
    head = orjson.loads(raw[4 : 4 + size])
    kind = head.pop("type")
    body = raw[4 + size :]
    if kind == "summary":
        return SummaryHeader(**head), body
    if kind == "watermark":
        return Watermark(**head), body
    raise ValueError(f"unknown envelope type {kind!r}")
