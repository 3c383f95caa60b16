"""Where a summarize worker stops reading a partition until a model version's automatic reference is known.

An automatic reference (``streams.auto_reference``) is learnt by the merge stage from the first K windows
of a model version and takes effect ``REFERENCE_DELAY_WINDOWS`` windows after the K-th: every window that
starts from then on must be binned against the new profile. A worker that is live gets the profile a few
windows before it needs it. A worker that starts behind its traffic (after an outage, a deploy, a backlog)
would reach those windows long before the merge stage has closed the K-th one, summarise them in
discovery mode, and no window would ever be judged. So, per input partition:

1. A model version is *awaited* while its configuration says ``reference.source: auto`` and no reference
   of it is known yet (``awaited_windows``).
2. The partition tracks the window starts it has opened for each awaited model version (routed by a
   scratch copy of its ``streams.windows.PartitionWindows``: one routing rule; a late record opens the
   current window). Once it has
   opened K of them, the reference can take effect no later than the K-th start plus
   ``REFERENCE_DELAY_WINDOWS`` windows: the merge stage's K-th window starts at or before this
   partition's K-th (it sees every partition's windows), so the partition never holds back data the
   reference is learnt from, and the merge stage is never left waiting for it.
3. The first record of an awaited model version that falls at or after that point is *held* with every
   record after it (all models: offset order is what makes a replay classify records as live did). The
   caller pauses the partition, advances its event time to just before the held record (nothing is read
   in between, so no record is judged differently; the merge stage can close the K-th window), and
   resumes once the reference is known, or after ``reference_wait_seconds`` without it (logged and
   counted; the model version is then summarised on in discovery mode on this partition).

With every partition seeing every window of the warm-up in event-time order (the usual case), a worker
behind its traffic writes the same rows as a live one. Pure bookkeeping: no Kafka, no clock reads.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from driftline.streams.config.model_config import ResolvedModelConfig
from driftline.streams.pipeline.windows import PartitionWindows, SpecOf
from driftline.streams.references.book import ReferenceBook

# Windows between the K-th window of an automatic reference's warm-up and the first one binned against it.
REFERENCE_DELAY_WINDOWS = 3
ModelVersion = tuple[str, str]


def effective_from(kth_window_start_ms: int, size_ms: int) -> int:
    """The start of the first window an automatic reference applies to, from its K-th warm-up window."""
    return kth_window_start_ms + REFERENCE_DELAY_WINDOWS * size_ms


def awaited_windows(book: ReferenceBook, config_for: Callable[[str, str], ResolvedModelConfig]
                    ) -> Callable[[str, str], int | None]:
    """K, for a model version whose automatic reference is still to come; None otherwise."""
    def awaited(model_id: str, model_version: str) -> int | None:
        if book.latest(model_id, model_version) is not None:
            return None
        reference = config_for(model_id, model_version).reference
        return reference.windows if reference.source == "auto" else None

    return awaited


@dataclass(slots=True)
class Hold:
    """A partition's records from ``held_from_ms`` on, kept back until ``model``'s reference is known."""

    model: ModelVersion
    held_from_ms: int
    since: float


@dataclass(slots=True)
class PartitionReferenceWait:
    """One input partition's view of the automatic references it waits for (rules in the module docstring)."""

    awaited: Callable[[str, str], int | None]
    shape: SpecOf
    opened: dict[ModelVersion, list[int]] = field(default_factory=dict)
    given_up: set[ModelVersion] = field(default_factory=set)
    hold: Hold | None = None

    def first_held(self, windows: PartitionWindows[Any], model_ids: Sequence[str], model_versions: Sequence[str],
                   ts_ms: Sequence[int]) -> tuple[int, ModelVersion] | None:
        """The position of the first record (in offset order) to hold, and the model version it waits for.

        ``windows`` is the partition before these records (left unchanged). Records before the held one
        are taken as read: the windows they open count towards the warm-up.
        """
        pending: dict[ModelVersion, int] = {}
        for mv in set(zip(model_ids, model_versions, strict=True)):
            if mv in self.given_up:
                continue
            k = self.awaited(*mv)
            if k is not None:
                pending[mv] = k
        if not pending:
            return None
        scratch = replace(windows, new_acc=lambda *_: None, open={}, run=list(windows.run))
        for i, (model_id, version, ts) in enumerate(zip(model_ids, model_versions, ts_ms, strict=True)):
            mv = (model_id, version)
            k = pending.get(mv)
            if k is None:
                scratch.assign(model_id, version, ts, i)
                continue
            start = scratch.assign(model_id, version, ts, i)[0].key[2]
            starts = self.opened.setdefault(mv, [])
            if len(starts) >= k and start >= effective_from(starts[k - 1], self.shape(model_id, version).size_ms):
                return i, mv
            if start not in starts:
                insort(starts, start)
                del starts[k:]
        return None

    def warm_up(self) -> dict[ModelVersion, list[int]]:
        """The windows opened of the model versions still awaited, to commit with the partition's offset: a
        worker that takes the partition over (or replays it) continues the count instead of restarting it."""
        return {mv: list(starts) for mv, starts in self.opened.items()
                if mv not in self.given_up and self.awaited(*mv) is not None}

    def release(self, timed_out: bool) -> None:
        """End the hold; after a time-out the model version is no longer waited for on this partition."""
        if self.hold is not None and timed_out:
            self.given_up.add(self.hold.model)
        self.hold = None

    def due(self, now: float, timeout_s: float) -> tuple[bool, bool]:
        """(whether the hold can end, whether it ends by time-out)."""
        if self.hold is None:
            return False, False
        if self.awaited(*self.hold.model) is None:
            return True, False
        timed_out = now - self.hold.since >= timeout_s
        return timed_out, timed_out
