"""The boundary of every record driftline reads back from its own topics: plain data, typed, or refused.

Internal topics (summaries, findings, alerts, alert deliveries, references, silences and the join-state,
alert-state and tick-state changelogs) are written by driftline, but anything that may produce to the
cluster can write to them, so what is read from them is input. Each reader parses a record into JSON data
(never pickle, never a class named by the record), checks every field's type here, and builds its own
objects only from checked values. A record that does not fit raises `InvalidRecord` whose message is the
reason; the reader dead-letters it where its stage has a dead-letter path, else skips it
(`streams.kafka.refusals` says which, logs and counts it).

`malformed` (and `decoded` over it) is the one place that turns a reader's own failure on a malformed record
(a missing key, a value its constructor refuses) into that reason, so no reader lets a ``KeyError`` or an
``AttributeError`` out.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, TypeVar

import orjson

from driftline.errors import InvalidRecord

S = TypeVar("S")
T = TypeVar("T")
# What a reader's own code raises on data of the wrong shape (RecursionError: a nesting deep enough to pass
# orjson's limit yet exhaust a recursive reader).
MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError,
             UnicodeError)


def load_object(raw: bytes | None, what: str) -> dict[str, Any]:
    """``raw`` as a JSON object; `InvalidRecord` naming ``what`` otherwise."""
    if raw is None:
        raise InvalidRecord(f"{what}: empty record value")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"{what}: not valid JSON: {exc}") from None
    if type(data) is not dict:
        raise InvalidRecord(f"{what}: must be a JSON object, got {type(data).__name__}")
    return data


@contextmanager
def malformed(what: str) -> Iterator[None]:
    """Turn a reader's own failure on malformed data inside the block into `InvalidRecord` naming ``what``."""
    try:
        yield
    except InvalidRecord:
        raise
    except MALFORMED as exc:
        raise InvalidRecord(f"{what}: {type(exc).__name__}: {str(exc)[:300]}") from None


def decoded(decode: Callable[[S], T], raw: S | None, what: str) -> T:
    """``decode(raw)``, with any failure of it on malformed data reported as `InvalidRecord`."""
    if raw is None:
        raise InvalidRecord(f"{what}: empty record value")
    with malformed(what):
        result = decode(raw)
    return result


def typed(cls: type[T], data: object, what: str) -> T:
    """The dataclass ``cls`` from a JSON object holding exactly its fields, each of its annotated type."""
    if type(data) is not dict:
        raise InvalidRecord(f"{what}: must be a JSON object, got {type(data).__name__}")
    hints = _hints(cls)
    if data.keys() != hints.keys():
        missing, extra = sorted(hints.keys() - data.keys()), sorted(map(str, data.keys() - hints.keys()))
        raise InvalidRecord(f"{what}: fields do not fit (missing {missing[:5]}, unknown {extra[:5]})")
    for name, hint in hints.items():
        check(data[name], hint, f"{what}.{name}")
    return cls(**data)


@cache
def _hints(cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def conforms(obj: T, what: str) -> T:
    """``obj`` (a dataclass a reader built from a record) once every field, nested ones too, is of its type.

    Readers that build their objects by hand pass some values through as the record had them; this is
    where a wrong one is caught, before a stage computes with it.
    """
    check(obj, type(obj), what)
    return obj


def check(value: object, hint: Any, path: str) -> None:
    """Raise `InvalidRecord` unless ``value`` is of type ``hint``.

    Understood: ``int`` (not a bool), ``float`` (an int or a float), ``str``, ``bool``, ``None``, unions,
    ``Literal``, ``list[X]``, ``tuple[X, ...]`` and ``tuple[X, Y]`` (a list or a tuple), ``dict[K, V]``, dataclasses (an
    instance whose fields are checked, or for `typed` a JSON object) and ``Any``.
    """
    if hint is Any:
        return
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                check(value, option, path)
                return
            except InvalidRecord:
                continue
        raise InvalidRecord(f"{path}: must be {_name(hint)}, got {_kind(value)}")
    if origin is typing.Literal:
        if not any(type(value) is type(a) and value == a for a in typing.get_args(hint)):
            raise InvalidRecord(f"{path}: must be one of {list(typing.get_args(hint))}, got {str(value)[:60]!r}")
        return
    if origin in (list, tuple):
        if type(value) not in (list, tuple):
            raise InvalidRecord(f"{path}: must be a list, got {_kind(value)}")
        args = typing.get_args(hint)
        if origin is tuple and args[-1] is not Ellipsis:  # a fixed-length tuple: one type per position
            if len(value) != len(args):  # type: ignore[arg-type]
                raise InvalidRecord(f"{path}: must be a list of {len(args)}, got {len(value)}")  # type: ignore[arg-type]
            for i, (x, item) in enumerate(zip(value, args, strict=True)):  # type: ignore[call-overload]
                check(x, item, f"{path}[{i}]")
            return
        for i, x in enumerate(value):  # type: ignore[attr-defined]
            check(x, args[0], f"{path}[{i}]")
        return
    if origin is dict:
        if type(value) is not dict:
            raise InvalidRecord(f"{path}: must be an object, got {_kind(value)}")
        key_hint, item = typing.get_args(hint)
        for k, x in value.items():
            check(k, key_hint, f"{path} key {str(k)[:40]!r}")
            check(x, item, f"{path}.{k}")
        return
    if dataclasses.is_dataclass(hint):
        if type(value) is not hint:
            raise InvalidRecord(f"{path}: must be {_name(hint)}, got {_kind(value)}")
        for name, field_hint in _hints(hint).items():  # type: ignore[arg-type]
            check(getattr(value, name), field_hint, f"{path}.{name}")
        return
    ok = (value is None if hint in (None, type(None)) else
          type(value) is int if hint is int else
          type(value) in (int, float) if hint is float else
          type(value) is hint)
    if not ok:
        raise InvalidRecord(f"{path}: must be {_name(hint)}, got {_kind(value)}")


def _name(hint: Any) -> str:
    if hint in (None, type(None)):
        return "null"
    return getattr(hint, "__name__", None) or " | ".join(_name(a) for a in typing.get_args(hint))


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
