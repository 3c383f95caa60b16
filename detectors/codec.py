"""Compact, versioned, checksummed binary framing for summaries: a JSON header plus raw numpy arrays.

Layout: 1 version byte, CRC32 (little-endian u32) of the rest, header length (u32), orjson header
{"state": ..., "arrays": [[dtype, shape], ...]}, then the arrays' little-endian bytes back to back.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import orjson

ALLOWED_DTYPES = {"<i8": np.int64, "<f8": np.float64, "<u8": np.uint64}


class ArrayTable:
    """Arrays referenced from a JSON state by index, so numeric payloads stay binary."""

    def __init__(self, arrays: list[np.ndarray] | None = None) -> None:
        self.arrays: list[np.ndarray] = arrays if arrays is not None else []

    def put(self, array: np.ndarray) -> int:
        a = np.asarray(array)
        dtype = a.dtype.newbyteorder("<")
        if dtype.str not in ALLOWED_DTYPES:
            raise TypeError(f"cannot encode arrays of dtype {a.dtype}")
        self.arrays.append(np.ascontiguousarray(a, dtype=dtype))
        return len(self.arrays) - 1

    def get(self, ref: Any, dtype: type[np.generic], ndim: int) -> np.ndarray:
        a = self.arrays[int(ref)]
        if a.dtype != np.dtype(dtype) or a.ndim != ndim:
            raise ValueError(f"array {ref} has dtype {a.dtype} and {a.ndim} dims, expected {dtype} and {ndim}")
        return a


def enc_float(x: float) -> float | str:
    """JSON-safe float: non-finite values become strings (orjson would write null)."""
    return x if math.isfinite(x) else repr(float(x))


def dec_float(x: Any) -> float:
    if isinstance(x, str) and x not in ("inf", "-inf", "nan"):
        raise ValueError(f"bad float {x!r}")
    if isinstance(x, bool):
        raise ValueError("bad float (bool)")
    return float(x)


def pack(version: int, state: Any, table: ArrayTable) -> bytes:
    header = orjson.dumps(
        {"state": state, "arrays": [[a.dtype.str, list(a.shape)] for a in table.arrays]},
        option=orjson.OPT_SORT_KEYS,
    )
    body = b"".join([len(header).to_bytes(4, "little"), header, *(a.tobytes() for a in table.arrays)])
    return bytes([version]) + zlib.crc32(body).to_bytes(4, "little") + body


def verify(data: bytes, version: int, what: str) -> bytes:
    """The framed bytes after the version and checksum, once both are right; ValueError otherwise.

    Cheap (a CRC32), so a reader can refuse foreign bytes when they arrive, before it keeps them.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"{what} bytes expected, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) < 9:
        raise ValueError(f"corrupt {what} bytes: {len(raw)} bytes is too short")
    if raw[0] != version:
        raise ValueError(f"unsupported {what} format version {raw[0]} (this build reads {version})")
    body = raw[5:]
    if zlib.crc32(body) != int.from_bytes(raw[1:5], "little"):
        raise ValueError(f"corrupt {what} bytes: checksum mismatch")
    return body


def unpack(data: bytes, version: int, what: str) -> tuple[Any, ArrayTable]:
    """Inverse of `pack`; ValueError on an unknown version or corrupt bytes, never a silent mis-read."""
    body = verify(data, version, what)
    size = int.from_bytes(body[:4], "little")
    try:
        header = orjson.loads(body[4 : 4 + size])
        offset = 4 + size
        arrays = []
        for dtype, shape in header["arrays"]:
            dt = np.dtype(ALLOWED_DTYPES[dtype]).newbyteorder("<")
            shape = tuple(int(s) for s in shape)
            if any(s < 0 for s in shape):
                raise ValueError("negative shape")
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            if offset + nbytes > len(body):
                raise ValueError("array data truncated")
            arrays.append(np.frombuffer(body, dtype=dt, count=nbytes // dt.itemsize, offset=offset)
                          .reshape(shape).astype(dt.newbyteorder("=")))
            offset += nbytes
        if offset != len(body):
            raise ValueError("trailing bytes")
        return header["state"], ArrayTable(arrays)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"corrupt {what} bytes: {exc}") from None
