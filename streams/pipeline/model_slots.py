"""How many model versions one summarize worker tracks at once, and what becomes of the others' predictions.

A model version takes a slot with the first prediction of it the worker keeps, and holds it until the
worker's slowest partition has closed the last window (or tick) the worker routed a prediction of it to:
at each checkpoint those slots are freed (`release`). Why the slowest partition and not the model's own:
partitions move through event time at their own pace, and freeing a slot as soon as the partition that
held its one record moved on would let a flood of one-record model ids through once per partition and
window instead of once per window. While all ``DRIFTLINE_MAX_MODELS`` slots are held, a prediction of any
other model version is refused (`check` raises `ModelLimitReached`): the stage dead-letters it with the
reason and counts it in ``driftline_dropped_models_total``. Dead letters rather than a bare count because
the records stay on ``<prefix>dlq``, reason attached, to be replayed once the limit is raised; they are
never summarised, so no window counts them.

A model version with steady traffic keeps its slot (its next window opens before the last one closes),
so a flood of new model_ids does not push it out. Which new model versions get a freed slot depends on
the arrival order across the worker's partitions, so unlike the rest of the stage this is not
replay-exact; the limit is a guard against abuse, sized well above a deployment's real model versions.
"""

from __future__ import annotations

from driftline.streams.pipeline.decode import InvalidRecord


class ModelLimitReached(InvalidRecord):
    """A prediction of a model version its worker has no slot for (the dead-letter reason)."""


class ModelSlots:
    """The model versions one worker tracks, at most ``limit`` at once.

    >>> slots = ModelSlots(1)
    >>> slots.check("a", "1"), slots.routed("a", "1", 70_000)
    (None, None)
    >>> try:
    ...     slots.check("b", "1")
    ... except ModelLimitReached as exc:
    ...     print(exc)
    model limit: this worker already tracks 1 model versions (DRIFTLINE_MAX_MODELS); b/1 is not summarised
    >>> slots.release(69_999), slots.held
    (None, {('a', '1'): 70000})
    >>> slots.release(70_000), slots.check("b", "1")
    (None, None)
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the model limit must be >= 1")
        self.limit = limit
        self.held: dict[tuple[str, str], int] = {}  # model version -> when its last routed window closes (ms)

    def check(self, model_id: str, model_version: str) -> None:
        """Take or keep the model version's slot; raise `ModelLimitReached` when none is free."""
        key = (model_id, model_version)
        if key in self.held:
            return
        if len(self.held) >= self.limit:
            raise ModelLimitReached(f"model limit: this worker already tracks {self.limit} model versions "
                                    f"(DRIFTLINE_MAX_MODELS); {model_id}/{model_version} is not summarised")
        self.held[key] = 0  # until a window of it is routed (a record held back for a reference is not yet)

    def routed(self, model_id: str, model_version: str, closes_at_ms: int) -> None:
        """A window or tick of the model version that closes at event time ``closes_at_ms`` got predictions."""
        key = (model_id, model_version)
        if key in self.held and closes_at_ms > self.held[key]:
            self.held[key] = closes_at_ms

    def release(self, slowest_event_time_ms: int | None) -> None:
        """Free the slots of the model versions whose last window the slowest partition has closed."""
        if slowest_event_time_ms is not None:
            self.held = {key: t for key, t in self.held.items() if t > slowest_event_time_ms}
