"""PII controls of the SDK: features and segments dropped, or replaced by a keyed hash, before a record is sent.

A ``PiiPolicy`` names fields; it applies to a feature and to a segment of that name alike. A dropped field
never leaves the serving app. A hashed one leaves as ``HMAC-SHA256(key, value)`` in hex: the same value gives
the same digest (so it still works as a categorical feature: drift in its distribution is still seen), while
without the key nobody can test guesses against it (a plain SHA-256 of an e-mail address is reversed by
hashing candidate addresses). The key is read from the environment variable the policy names, never from the
policy itself, so configuration files and repositories never hold it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import orjson

MIN_KEY_BYTES = 16  # a shorter key can be guessed, and with it every hashed value
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class PiiPolicy:
    """Which features and segments a ``Monitor`` drops or hashes; ``key_env`` names the variable with the key.

    >>> PiiPolicy(drop=("ssn",), hash=("email",), key_env="DRIFTLINE_PII_KEY").hash
    ('email',)
    """

    drop: tuple[str, ...] = ()
    hash: tuple[str, ...] = ()
    key_env: str = "DRIFTLINE_PII_KEY"

    def __post_init__(self) -> None:
        for name in ("drop", "hash"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(field, str) for field in value):
                raise TypeError(f"PiiPolicy.{name} must be a tuple of field names, got {value!r}")
        both = sorted(set(self.drop) & set(self.hash))
        if both:
            raise ValueError(f"PiiPolicy: {both} both dropped and hashed; choose one")
        if not _ENV_NAME.match(self.key_env):
            raise ValueError(f"PiiPolicy.key_env must be an environment variable name, got {self.key_env!r}")

    def redactor(self) -> Redactor:
        """The policy with its key read now; raise ``ValueError`` naming ``key_env`` when hashing has no key."""
        key = b""
        if self.hash:
            key = os.environ.get(self.key_env, "").encode()
            if len(key) < MIN_KEY_BYTES:
                state = "is not set" if not key else f"holds fewer than {MIN_KEY_BYTES} bytes"
                raise ValueError(f"PiiPolicy hashes {list(self.hash)} but the key variable {self.key_env} {state}")
        return Redactor(frozenset(self.drop), frozenset(self.hash), key)


class Redactor:
    """A policy bound to its key: applies it to one record's features or segments."""

    __slots__ = ("_drop", "_hash", "_key")

    def __init__(self, drop: frozenset[str], hashed: frozenset[str], key: bytes) -> None:
        self._drop = drop
        self._hash = hashed
        self._key = key

    def __repr__(self) -> str:  # the key stays out of every repr, traceback and log line
        return f"Redactor(drop={sorted(self._drop)}, hash={sorted(self._hash)})"

    def digest(self, value: object) -> str:
        """The keyed hash of one value: of its UTF-8 bytes for text, of its JSON text otherwise (``True``: ``true``),
        so anyone holding the key computes the same digest of a raw value elsewhere (e.g. to join on it)."""
        data = value.encode() if isinstance(value, str) else orjson.dumps(value)
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def apply(self, fields: Mapping[str, V]) -> dict[str, V | str]:
        """``fields`` without the dropped names and with the hashed ones' values replaced (a missing value,
        None, stays missing)."""
        return {name: (self.digest(value) if name in self._hash and value is not None else value)
                for name, value in fields.items() if name not in self._drop}
