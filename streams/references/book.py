"""The references in memory: what each model version's windows are binned against and compared with.

A reference reaches a worker through the references topic (``references.topic``). It applies to the
windows that *start* at or after its ``effective_from``, so every partition bins a window against the same
profile however late the reference reaches it; open windows keep the profile they started with.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from bisect import insort
from dataclasses import dataclass, replace
from typing import Any

import orjson

from driftline.detectors.reference import ReferenceProfile
from driftline.detectors.summaries import WindowSummary
from driftline.streams.pipeline import internal

DISCOVERY = ReferenceProfile.discovery()


@dataclass(frozen=True, slots=True)
class Reference:
    model_id: str
    model_version: str
    reference_id: str
    content_hash: str
    source: str
    effective_from_ms: int
    profile: ReferenceProfile
    summary: WindowSummary | None = None

    @property
    def key(self) -> bytes:
        return f"{self.model_id}\x1f{self.model_version}\x1f{self.effective_from_ms}".encode()

    def encode(self) -> bytes:
        return orjson.dumps({
            "model_id": self.model_id, "model_version": self.model_version, "reference_id": self.reference_id,
            "content_hash": self.content_hash, "source": self.source, "effective_from_ms": self.effective_from_ms,
            "profile": self.profile.to_dict(),
            "summary": base64.b64encode(self.summary.to_bytes()).decode() if self.summary is not None else None,
        })

    @classmethod
    def decode(cls, raw: bytes | None) -> Reference:
        """A record of the references topic; `InvalidRecord` naming the field when it is not one."""
        d = internal.typed(_ReferenceRecord, internal.load_object(raw, "reference"), "reference")
        with internal.malformed("reference"):
            summary = WindowSummary.from_bytes(base64.b64decode(d.summary, validate=True)) if d.summary else None
            ref = cls(d.model_id, d.model_version, d.reference_id, d.content_hash, d.source, d.effective_from_ms,
                      ReferenceProfile.from_dict(d.profile), summary)
        return ref

    def with_summary(self, summary: WindowSummary) -> Reference:
        """The same reference with its data: the content hash now covers the summary it compares with."""
        return replace(self, summary=summary, content_hash=hashlib.sha256(summary.to_bytes()).hexdigest())


@dataclass(frozen=True, slots=True)
class _ReferenceRecord:
    """A references record's fields and their types (the profile is checked by ``ReferenceProfile.from_dict``)."""

    model_id: str
    model_version: str
    reference_id: str
    content_hash: str
    source: str
    effective_from_ms: int
    profile: dict[str, Any]
    summary: str | None


class ReferenceBook:
    """Every reference seen so far, per model version, ordered by effective time. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[tuple[str, str], list[tuple[int, str, Reference]]] = {}

    def add(self, ref: Reference) -> None:
        with self._lock:
            entries = [e for e in self._refs.get((ref.model_id, ref.model_version), [])
                       if e[0] != ref.effective_from_ms]
            insort(entries, (ref.effective_from_ms, ref.reference_id, ref))
            self._refs[(ref.model_id, ref.model_version)] = entries

    def at(self, model_id: str, model_version: str, window_start_ms: int) -> Reference | None:
        """The reference in force for a window starting at ``window_start_ms``."""
        with self._lock:
            found = None
            for effective, _rid, ref in self._refs.get((model_id, model_version), []):
                if effective > window_start_ms:
                    break
                found = ref
            return found

    def latest(self, model_id: str, model_version: str) -> Reference | None:
        with self._lock:
            entries = self._refs.get((model_id, model_version))
            return entries[-1][2] if entries else None

    def profile_for(self, model_id: str, model_version: str, window_start_ms: int) -> ReferenceProfile:
        ref = self.at(model_id, model_version, window_start_ms)
        return ref.profile if ref is not None else DISCOVERY
