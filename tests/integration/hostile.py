"""Hypothesis strategies of hostile records for the predictions and labels topics, each with its verdict.

A strategy draws a `Hostile`: the Kafka key and value, whether the contract accepts it (decided by how it
was built, not by driftline's decoder, so a test can hold the decoder to it) and its kind. Valid ones are
hostile too (NUL and other unicode edge cases in strings, duplicate JSON keys whose last value is right, a
record without a key): they must be counted like any other. Duplicate keys are read last-wins, as orjson,
msgspec, Python's json and JavaScript's JSON.parse all read them, so both of driftline's paths agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

MAX_RECORD_BYTES = 1_048_576
YEAR_2200_MS = 7_258_118_400_000
ODD_TEXT = st.sampled_from(["\u0000", "nul\u0000in", "\u202etxet", "e\u0301", "\U0001f600", "\ufeff", "\u2028",
                            " ", "\\", '"', "\ud7ff\ue000", "\uffff"])


@dataclass(frozen=True, slots=True)
class Hostile:
    key: bytes | None
    value: bytes | None
    valid: bool
    kind: str


def rfc3339(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prediction(pid: str, model: str, version: str, ts_ms: int) -> dict[str, Any]:
    return {"schema_version": 1, "prediction_id": pid, "model_id": model, "model_version": version,
            "ts": ts_ms, "features": {"amount": 12.5, "country": "FR"},
            "prediction": {"score": 0.25, "label": "ok"}, "segments": {"tier": "gold"}}


def label(pid: str, model: str, ts_ms: int) -> dict[str, Any]:
    return {"schema_version": 1, "prediction_id": pid, "model_id": model, "ts": ts_ms, "label": "ok"}


def _dumps(obj: object) -> bytes:
    """Compact UTF-8 JSON; Python's writer, since some wrong values (integers past 64 bits) orjson refuses."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _with_raw(obj: dict[str, Any], path: tuple[str, ...], raw: bytes) -> bytes:
    """``obj`` as JSON with the value at ``path`` replaced by raw text (what orjson would never write)."""
    marker = "\u0001MARK\u0001"
    doc: Any = json.loads(_dumps(obj))
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = marker
    return _dumps(doc).replace(_dumps(marker), raw)


WRONG = {  # field -> values the contract refuses there
    "schema_version": [2, 0, -1, 999, "1", None, True, [1], 1.5],
    "prediction_id": [12, None, "", "x" * 129, ["p"], {"p": 1}, True],
    "model_id": [3.5, None, "", "m" * 257, []],
    "model_version": [1, None, "", {}],
    "ts": ["yesterday", "2026-01-01", "2026-01-01T00:00:00", -1, 1.5, True, None, [], 10**20,
           "2026-13-01T00:00:00Z"],
    "features": [[], "x", 1, None, {"a": [1]}, {"a": {"b": 1}}, {f"f{i}": 1 for i in range(2001)}],
    "prediction": [{}, [], "fraud", None, {"score": 2}, {"score": -0.1}, {"score": "0.5"}, {"zzz": 1},
                   {"probabilities": {}}, {"probabilities": {"a": 1.5}}, {"value": "x"}, {"label": None},
                   {"label": [1]}],
    "segments": [{"a": 1}, [], "gold", {"a": "x" * 257}, {f"s{i}": "v" for i in range(65)}, None],
}
LABEL_WRONG = {
    "schema_version": [2, 0, "1", None, True],
    "prediction_id": [12, None, "", "x" * 129],
    "model_id": [None, "", 7],
    "ts": ["soon", -1, None, 1.5, "2026-01-01"],
    "label": [None, [1], {"a": 1}],
}


@st.composite
def hostile_prediction(draw: st.DrawFn, pid: str, model: str, version: str, ts_ms: int,
                       max_bytes: int = 10 * MAX_RECORD_BYTES) -> Hostile:
    """One hostile record for the predictions topic; valid ones are `model`/`version` at ``ts_ms``."""
    good = prediction(pid, model, version, ts_ms)
    return _hostile(draw, good, pid, WRONG, max_bytes, "features", "amount")


@st.composite
def hostile_label(draw: st.DrawFn, pid: str, model: str, ts_ms: int, max_bytes: int = 10 * MAX_RECORD_BYTES
                  ) -> Hostile:
    """One hostile record for the labels topic; valid ones label ``pid`` (which must not be labelled twice)."""
    return _hostile(draw, label(pid, model, ts_ms), pid, LABEL_WRONG, max_bytes, "label", None)


def _hostile(draw: st.DrawFn, good: dict[str, Any], pid: str, wrong: dict[str, list[Any]], max_bytes: int,
             number_field: str, number_key: str | None) -> Hostile:
    key = pid.encode()
    number_path = (number_field, number_key) if number_key else (number_field,)
    kind = draw(st.sampled_from(["bytes", "deep", "big", "wrong type", "non-finite", "bad unicode", "odd unicode",
                                 "1970", "2200", "duplicate keys", "bad key", "no key", "empty", "missing"]))
    if kind == "bytes":
        return Hostile(key, draw(st.binary(max_size=300)), False, kind)
    if kind == "deep":
        depth = draw(st.integers(300, max(300, min(100_000, max_bytes // 12))))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        nested = opener * depth + b"1" + closer * depth
        where = draw(st.sampled_from(["top", "inside"]))
        return Hostile(key, nested if where == "top" else _with_raw(good, number_path, nested), False, kind)
    if kind == "big":
        size = draw(st.integers(MAX_RECORD_BYTES + 1, max(max_bytes, MAX_RECORD_BYTES + 1)))
        if size > max_bytes:  # the topic cannot carry more: a big value where the contract bounds the length
            return Hostile(key, _dumps({**good, "prediction_id": "x" * (max_bytes - 400)}), False, kind)
        return Hostile(key, _dumps({**good, "model_id": "m" * size}), False, kind)
    if kind == "wrong type":
        field = draw(st.sampled_from(sorted(wrong)))
        return Hostile(key, _dumps({**good, field: draw(st.sampled_from(wrong[field]))}), False, kind)
    if kind == "non-finite":
        raw = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", b"nan"]))
        path = draw(st.sampled_from([number_path, ("ts",), ("schema_version",)]))
        return Hostile(key, _with_raw(good, path, raw), False, kind)
    if kind == "bad unicode":
        raw = draw(st.sampled_from([b'"\\ud800"', b'"a\\udfffb"', b'"\xff\xfe"', b'"\xc0\x80"', b'"\xed\xa0\x80"',
                                    b'"\\u00"', b'"\x00"', b'"\x1f"']))
        field = draw(st.sampled_from(["model_id", "prediction_id"] if "model_version" in good else
                                     ["model_id", "label"]))
        return Hostile(key, _with_raw(good, (field,), raw), False, kind)
    if kind == "odd unicode":  # strange but valid text: counted like any other record
        text = draw(ODD_TEXT)
        if "features" in good:
            body = {**good, "features": {**good["features"], f"f{text}": text}, "segments": {"tier": text}}
        else:
            body = {**good, "label": text}
        return Hostile(key, _dumps(body), True, kind)
    if kind in ("1970", "2200"):
        ts = draw(st.integers(0, 31_535_999_999)) if kind == "1970" else \
            draw(st.integers(YEAR_2200_MS, YEAR_2200_MS + 31_535_999_999))
        as_text = draw(st.booleans())
        return Hostile(key, _dumps({**good, "ts": rfc3339(ts) if as_text else ts}), False, kind)
    if kind == "duplicate keys":  # last one wins; valid when the last one is
        field = draw(st.sampled_from(sorted(wrong)))
        bad = draw(st.sampled_from(wrong[field]))
        last_good = draw(st.booleans())
        first, last = (bad, good[field]) if last_good else (good[field], bad)
        body = _dumps(good)[:-1] + b"," + _dumps(field) + b":" + _dumps(first) + b"," + \
            _dumps(field) + b":" + _dumps(last) + b"}"
        return Hostile(key, body, last_good, kind)
    if kind == "bad key":
        other = draw(st.sampled_from([b"", b"someone-else", pid.encode() + b"\x00", pid.upper().encode() + b"!"]))
        return Hostile(other, _dumps(good), False, kind)
    if kind == "no key":  # keyless records are allowed (the partitioner then picks any partition)
        return Hostile(None, _dumps(good), True, kind)
    if kind == "empty":
        value = draw(st.sampled_from([None, b"", b"{}", b"null", b"[]", b'""', b"0", b" ", b"{}{}", b"\n"]))
        return Hostile(key, value, False, kind)
    field = draw(st.sampled_from(sorted(k for k in good if k != "segments")))
    return Hostile(key, _dumps({k: v for k, v in good.items() if k != field}), False, kind)
