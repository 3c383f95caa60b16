"""The one shape every detector reports in, so streams/ can write and alert on any of them alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, runtime_checkable


@dataclass(frozen=True, slots=True)
class Finding:
    """One detector's verdict on one (metric, feature, slice) of one window.

    >>> Finding(metric="psi", value=0.31, threshold=0.2, breached=True, feature="age")
    Finding(metric='psi', value=0.31, threshold=0.2, breached=True, feature='age', slice='', p_value=None, detail={})
    """

    metric: str
    value: float
    threshold: float | None
    breached: bool
    feature: str = ""
    slice: str = ""
    p_value: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Detector(Protocol):
    """What streams/ needs of a detector: feed a window, read findings, checkpoint the state."""

    def update(self, summary: Any) -> list[Finding]: ...

    def state_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self: ...
