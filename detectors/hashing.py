"""Seedless 64-bit hashing and bounded "k smallest hashes" selection.

Bounded parts of a summary (the reservoir, unseen category values, slice keys) keep the entries with the
k smallest hashes under a fixed total order. That choice, unlike "most frequent so far", does not depend
on the order in which partitions are merged, so merge stays exactly associative and commutative: an
entry among the k smallest of the whole union is among the k smallest of every part containing it, so
it survives every intermediate truncation with its exact count. Python's `hash` is salted per process,
hence this module's own FNV-style word hash with a splitmix64 finaliser.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

U64 = NDArray[np.uint64]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_SEED = np.uint64(0x243F6A8885A308D3)
_MUL = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _finalise(h: U64) -> U64:
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return h


def hash_words(words: U64, lengths: NDArray[np.int64]) -> U64:
    """Hash rows of little-endian 64-bit words; only the first ceil(length / 8) words of a row count."""
    n, width = words.shape
    used = (lengths + 7) // 8
    h = np.full(n, _SEED, dtype=np.uint64)
    for j in range(width):
        mixed = (h ^ words[:, j]) * _MUL
        mixed ^= mixed >> np.uint64(29)
        np.copyto(h, mixed, where=used > j)
    h ^= lengths.astype(np.uint64)
    return _finalise(h)


def hash_strings(values: Sequence[str] | NDArray[Any]) -> U64:
    """64-bit hashes of strings (UTF-8), vectorised, the same on every platform and process.

    Trailing NUL characters are ignored (numpy byte strings cannot hold them).

    >>> h = hash_strings(["a", "b", "a"])
    >>> bool(h[0] == h[2] != h[1])
    True
    >>> hex(int(hash_strings(["prediction-1"])[0]))
    '0x7abbb3c190d33d9f'
    """
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype.kind not in "US":
        arr = np.asarray([str(v) for v in arr.reshape(-1)])
    arr = np.ascontiguousarray(arr.reshape(-1))
    lengths = np.strings.str_len(arr).astype(np.int64)
    if arr.dtype.kind == "U":
        codes = arr.view(np.uint32).reshape(arr.size, -1)
        if codes.size and codes.max() >= 128:
            arr = np.ascontiguousarray(np.strings.encode(arr, "utf-8"))
            lengths = np.strings.str_len(arr).astype(np.int64)
        else:
            return _hash_bytes(codes.astype(np.uint8), lengths)
    return _hash_bytes(arr.view(np.uint8).reshape(arr.size, arr.dtype.itemsize), lengths)


def _hash_bytes(raw: NDArray[np.uint8], lengths: NDArray[np.int64]) -> U64:
    width = raw.shape[1]
    buf = np.zeros((raw.shape[0], max((width + 7) // 8 * 8, 8)), dtype=np.uint8)
    buf[:, :width] = raw
    return hash_words(buf.view("<u8").astype(np.uint64), lengths)


def hash_positions(salt: int, n: int) -> U64:
    """splitmix64 hashes of positions 0..n-1 under a 64-bit salt: ids for rows that came without one."""
    h = (np.arange(1, n + 1, dtype=np.uint64) * _MUL) + np.uint64(salt & 0xFFFFFFFFFFFFFFFF)
    return _finalise(h)


def keep_smallest(
    counts: dict[K, V], k: int, rank: Callable[[Sequence[K]], Iterable[Any]]
) -> tuple[dict[K, V], list[V]]:
    """Split `counts` into the `k` entries of smallest rank(key) and the dropped values.

    `rank` maps a list of keys to sortable ranks (it is called once per truncation, vectorised).
    """
    if len(counts) <= k:
        return counts, []
    keys = list(counts)
    ranks = list(rank(keys))
    order = sorted(range(len(keys)), key=ranks.__getitem__)
    kept = {keys[i]: counts[keys[i]] for i in sorted(order[:k])}
    return kept, [counts[keys[i]] for i in order[k:]]


def string_rank(keys: Sequence[str]) -> list[int]:
    """Rank of string keys: their 64-bit hash."""
    return hash_strings(list(keys)).tolist()
