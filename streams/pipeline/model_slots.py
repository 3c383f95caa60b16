"""How many model versions one summarize worker tracks at once, and what becomes of the others' predictions.

A model version takes a slot with the first prediction of it the worker keeps, and holds it while it has an
open window or tick on any of the worker's partitions: at each checkpoint the slots of model versions with
nothing open are freed (`release`). While all ``DRIFTLINE_MAX_MODELS`` slots are held, a prediction of any
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

from collections.abc import Iterable

from driftline.streams.pipeline.decode import InvalidRecord


class ModelLimitReached(InvalidRecord):
    """A prediction of a model version its worker has no slot for (the dead-letter reason)."""


class ModelSlots:
    """The model versions one worker tracks, at most ``limit`` at once.

    >>> slots = ModelSlots(1)
    >>> slots.check("a", "1"), slots.check("a", "1")
    (None, None)
    >>> try:
    ...     slots.check("b", "1")
    ... except ModelLimitReached as exc:
    ...     print(exc)
    model limit: this worker already tracks 1 model versions (DRIFTLINE_MAX_MODELS); b/1 is not summarised
    >>> slots.release([])
    >>> slots.check("b", "1")
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the model limit must be >= 1")
        self.limit = limit
        self.held: set[tuple[str, str]] = set()
        self.refused = 0  # predictions dead-lettered for want of a slot (the stage counts them)

    def check(self, model_id: str, model_version: str) -> None:
        """Take or keep the model version's slot; raise `ModelLimitReached` when none is free."""
        key = (model_id, model_version)
        if key in self.held:
            return
        if len(self.held) >= self.limit:
            raise ModelLimitReached(f"model limit: this worker already tracks {self.limit} model versions "
                                    f"(DRIFTLINE_MAX_MODELS); {model_id}/{model_version} is not summarised")
        self.held.add(key)

    def release(self, open_models: Iterable[tuple[str, str]]) -> None:
        """Free the slots of the model versions not in ``open_models`` (those with an open window or tick)."""
        self.held.intersection_update(open_models)
