"""river detectors' state as plain data: what `RiverTicks` checkpoints, and the checks that restore it.

A checkpoint is read back from a Kafka topic, so it is input: it must never name a class or carry code
(pickle does both). river has no other serialisation, and its ADWIN window and its exponentially weighted
mean live in Rust, whose ``__setstate__`` unwraps a bincode blob (a malformed blob panics, which Python sees
as a ``BaseException``). So a state here is each detector's attributes by name, and the Rust structs' fields
by name; restoring builds a fresh detector from its parameters, then overwrites only the attributes that
fresh detector has, with values of the kinds it holds, and hands Rust only bincode re-encoded here from
checked fields. Parameters (a class's ``__init__`` arguments) are not repeated in the state: they come from
the parameters the detector is rebuilt with, so a state cannot set them to values the constructor would
refuse. Floats stay exact: JSON numbers when finite, ``"inf"``, ``"-inf"`` or ``"nan"`` otherwise.

Anything refused raises `ValueError` naming the field (detectors are library code: a bad argument is a
plain ``ValueError``).
"""

from __future__ import annotations

import inspect
import math
import struct
from collections.abc import Callable, Mapping
from typing import Any

from river import drift, stats
from river._river_rust.drift import AdaptiveWindowing
from river._river_rust.stats import RsEWMean
from river.drift.binary.hddm_w import SampleInfo

# Pure-Python river objects a wrapped detector holds; their attributes are saved by name.
_NESTED: tuple[type, ...] = (stats.Mean, stats.Var, stats.EWMean, SampleInfo)
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_PARAM_TYPES = (bool, int, float, str, type(None))

# bincode (little-endian, u64 lengths) of river's AdaptiveWindowing: its parameters, then the fields below,
# then the bucket list, then the Python wrapper's constructor arguments (kept from the fresh detector).
_ADWIN_HEAD = struct.Struct("<diQdd")
_ADWIN_FIELDS = struct.Struct("<ddddiiii")
_ADWIN_NAMES = ("total", "variance", "width", "total_width", "n_buckets", "max_n_buckets", "tick", "n_detections")
_ADWIN_TAIL = struct.Struct("<diQii")
_ROW = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_I32_MAX = 2**31 - 1
_MAX_BUCKET_ROWS = 62  # row i holds summaries of 2**i values; 2**62 values is beyond any stream


def _refuse(path: str, why: str) -> ValueError:
    return ValueError(f"river state refused: {path}: {why}")


def _float_out(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _float_in(value: object, path: str) -> float:
    if type(value) in (int, float):
        return float(value)  # type: ignore[arg-type]
    if type(value) is str and value in _NONFINITE:
        return _NONFINITE[value]
    raise _refuse(path, f"must be a number, got {type(value).__name__}")


def _int_in(value: object, path: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _refuse(path, f"must be an integer in [{low}, {high}], got {value!r}"[:200])
    return value


def count(value: object, path: str) -> int:
    """A position or a count in a wrapper's state: a non-negative integer."""
    return _int_in(value, path, 0, 2**63 - 1)


def items(state: Mapping[str, object], name: str) -> list[object]:
    """``state[name]``, which must be a list."""
    value = state[name]
    if type(value) is not list:
        raise _refuse(name, f"must be a list, got {type(value).__name__}")
    return value


def _params_of(cls: type) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(cls.__init__).parameters


# -- saving --------------------------------------------------------------------------------------------------


def dump(obj: object) -> dict[str, Any]:
    """The attributes of a river detector (or a river object it holds) as JSON-safe data, parameters left out."""
    params = _params_of(type(obj))
    return {name: _dump_value(value) for name, value in vars(obj).items() if name not in params}


def _dump_value(value: object) -> Any:
    if value is None or type(value) in (bool, int):
        return value
    if type(value) is float:
        return _float_out(value)
    if type(value) is AdaptiveWindowing:
        return _dump_adwin(value)
    if type(value) is RsEWMean:
        return _dump_ewmean(value)
    if type(value) in _NESTED:
        return dump(value)
    # A river release that adds an attribute of another kind must be looked at before it is checkpointed.
    raise TypeError(f"cannot save river state holding a {type(value).__name__}")


class _Reader:
    """Reads a river bincode blob field by field; any mismatch with the layout above is an error, not a guess."""

    def __init__(self, blob: bytes) -> None:
        self.blob, self.at = blob, 0

    def take(self, fmt: struct.Struct) -> tuple[Any, ...]:
        values = fmt.unpack_from(self.blob, self.at)
        self.at += fmt.size
        return values

    def floats(self) -> list[float]:
        (n,) = self.take(_U64)
        return [self.take(_F64)[0] for _ in range(n)]


def _parse_adwin(helper: AdaptiveWindowing) -> tuple[bytes, tuple[Any, ...], list[dict[str, Any]], bytes]:
    """An ADWIN window's bincode as (parameters, fields, buckets, wrapper arguments), layout checked."""
    r = _Reader(helper.__getstate__())
    r.take(_ADWIN_HEAD)
    fields = r.take(_ADWIN_FIELDS)
    (rows,) = r.take(_U64)
    buckets = []
    for _ in range(rows):
        _max_size, used = r.take(_ROW)
        buckets.append({"used": used, "totals": r.floats(), "variances": r.floats()})
    delta, clock, max_buckets, min_window_length, grace_period = helper.__getnewargs__()
    tail = _ADWIN_TAIL.pack(delta, clock, max_buckets, min_window_length, grace_period)
    if r.blob[r.at:] != tail:
        raise TypeError("river's ADWIN state layout is not the one this module reads")
    return r.blob[:_ADWIN_HEAD.size], fields, buckets, tail


def _dump_adwin(helper: AdaptiveWindowing) -> dict[str, Any]:
    _head, fields, buckets, _tail = _parse_adwin(helper)
    return {**{k: _float_out(v) if type(v) is float else v for k, v in zip(_ADWIN_NAMES, fields, strict=True)},
            "buckets": [{"used": b["used"], "totals": [_float_out(x) for x in b["totals"]],
                         "variances": [_float_out(x) for x in b["variances"]]} for b in buckets]}


def _dump_ewmean(mean: RsEWMean) -> dict[str, Any]:
    blob = mean.__getstate__()
    value, _alpha, _one_minus, initialized, _wrapper_alpha = struct.unpack("<ddd?d", blob)
    return {"mean": _float_out(value), "initialized": initialized}


# -- restoring -----------------------------------------------------------------------------------------------


def build(cls: type, params: object) -> Any:
    """A fresh ``cls`` from checkpointed keyword arguments: names of its ``__init__``, of its defaults' kinds."""
    if type(params) is not dict:
        raise _refuse("params", "must be an object")
    signature = _params_of(cls)
    for name, value in params.items():
        default = signature[name].default if name in signature and name != "self" else None
        if default is None or default is inspect.Parameter.empty:
            raise _refuse(f"params.{name}", f"{cls.__name__} takes no such parameter")
        numeric = type(default) in (int, float) and type(value) in (int, float)
        if type(value) not in _PARAM_TYPES or not (type(value) is type(default) or numeric):
            raise _refuse(f"params.{name}", f"must be a {type(default).__name__}, got {type(value).__name__}")
    check = _PARAM_CHECKS.get(cls)
    if check is not None:
        check({**{n: p.default for n, p in signature.items() if n != "self"}, **params})
    try:
        return cls(**params)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _refuse("params", str(exc)) from None


def load_into(obj: object, data: object, path: str = "detector") -> None:
    """Overwrite ``obj``'s non-parameter attributes with checked values from ``data`` (made by `dump`)."""
    if type(data) is not dict:
        raise _refuse(path, "must be an object")
    params = _params_of(type(obj))
    names = {n: v for n, v in vars(obj).items() if n not in params}
    if data.keys() != names.keys():
        raise _refuse(path, f"fields {sorted(map(str, data))[:20]} are not {sorted(names)}")
    for name, current in names.items():
        setattr(obj, name, _load_value(current, data[name], f"{path}.{name}"))
    consistent = _CONSISTENCY.get(type(obj))
    if consistent is not None:
        consistent(obj, path)


def _load_value(current: object, value: object, path: str) -> Any:
    if type(current) is AdaptiveWindowing:
        return _load_adwin(current, value, path)
    if type(current) is RsEWMean:
        return _load_ewmean(current, value, path)
    if type(current) in _NESTED:
        load_into(current, value, path)
        return current
    if type(current) is bool:
        if type(value) is not bool:
            raise _refuse(path, f"must be a boolean, got {type(value).__name__}")
        return value
    if current is None and value is None:
        return None
    if type(value) is int and type(current) is int:
        return value
    return _float_in(value, path)


def _load_ewmean(fresh: RsEWMean, value: object, path: str) -> RsEWMean:
    if type(value) is not dict or value.keys() != {"mean", "initialized"}:
        raise _refuse(path, "must be an object of mean and initialized")
    if type(value["initialized"]) is not bool:
        raise _refuse(f"{path}.initialized", "must be a boolean")
    blob = fresh.__getstate__()
    fresh.__setstate__(_F64.pack(_float_in(value["mean"], f"{path}.mean")) + blob[8:24]
                       + bytes((value["initialized"],)) + blob[25:])
    return fresh


def _load_adwin(fresh: AdaptiveWindowing, value: object, path: str) -> AdaptiveWindowing:
    """Re-encode an ADWIN window from checked fields; its parameters are the fresh detector's."""
    if type(value) is not dict or value.keys() != {*_ADWIN_NAMES, "buckets"}:
        raise _refuse(path, f"must be an object of {', '.join(_ADWIN_NAMES)} and buckets")
    head, _fields, _buckets, tail = _parse_adwin(fresh)
    max_buckets = _ADWIN_HEAD.unpack(head)[2]
    floats = [_float_in(value[n], f"{path}.{n}") for n in _ADWIN_NAMES[:4]]
    ints = [_int_in(value[n], f"{path}.{n}", 0, _I32_MAX) for n in _ADWIN_NAMES[4:]]
    rows = value["buckets"]
    if type(rows) is not list or not 1 <= len(rows) <= _MAX_BUCKET_ROWS:
        raise _refuse(f"{path}.buckets", f"must be a list of 1..{_MAX_BUCKET_ROWS} rows")
    out = bytearray(head)
    out += _ADWIN_FIELDS.pack(*floats, *ints) + _U64.pack(len(rows))
    width = 0
    for i, row in enumerate(rows):
        where = f"{path}.buckets[{i}]"
        if type(row) is not dict or row.keys() != {"used", "totals", "variances"}:
            raise _refuse(where, "must be an object of used, totals and variances")
        # The newest row may be empty; an older empty one would make river delete from nothing (a panic).
        used = _int_in(row["used"], f"{where}.used", 1 if i and i == len(rows) - 1 else 0, max_buckets)
        width += used << i
        out += _ROW.pack(max_buckets, used)
        for part in ("totals", "variances"):
            xs = row[part]
            if type(xs) is not list or len(xs) != max_buckets + 1:
                raise _refuse(f"{where}.{part}", f"must be a list of {max_buckets + 1} numbers")
            out += _U64.pack(len(xs)) + struct.pack(f"<{len(xs)}d", *(_float_in(x, f"{where}.{part}") for x in xs))
    if width != floats[2]:
        raise _refuse(f"{path}.width", f"is {floats[2]:g}, but the buckets hold {width} values")
    fresh.__setstate__(bytes(out) + tail)
    return fresh


def _check_adwin_params(params: dict[str, Any]) -> None:
    # river's Rust ADWIN divides by `clock` and indexes by `max_buckets`: values it would panic on are refused.
    if not 0 < params["delta"] < 1:
        raise _refuse("params.delta", "must lie in (0, 1)")
    for name, low in (("clock", 1), ("max_buckets", 2), ("min_window_length", 1), ("grace_period", 0)):
        _int_in(params[name], f"params.{name}", low, _I32_MAX)


def _check_ddm(det: Any, path: str) -> None:
    if (det._p_min is None) != (det._s_min is None):
        raise _refuse(path, "_p_min and _s_min must both be set or both be null")


_PARAM_CHECKS: Mapping[type, Callable[[dict[str, Any]], None]] = {drift.ADWIN: _check_adwin_params}
_CONSISTENCY: Mapping[type, Callable[[Any, str], None]] = {drift.binary.DDM: _check_ddm}
