"""The reference service's data: river's Agrawal loan stream (generated locally, nothing downloaded).

Agrawal et al.'s generator has six numeric attributes (salary, commission, age, house value, years owned,
loan) and three categorical ones (education level, car maker, zip code); classification function 2 labels a
row by age and salary bands, with balanced classes. The zip code groups into three ``region`` segments,
which is what the service reports to driftline as the slice of every prediction. This module owns the
feature schema, the segment rule, and the two ways traffic is made to go wrong on purpose:

* ``corrupt_segment`` inverts the labels of one region: a training set whose label join broke for one
  region, so a model trained on it (version 2) is confidently wrong on that slice and fine elsewhere;
* ``draw(..., shift=s)`` keeps only a fraction ``1 - s`` of the applicants younger than 50 (rejection
  sampling), so the input distribution moves while the labelling rule stays what it was: covariate shift.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from river.datasets import synth

CLASSIFICATION_FUNCTION = 2
NUMERIC = ("salary", "commission", "age", "hvalue", "hyears", "loan")
# categorical attribute -> its values in the generator (the one-hot layout of the model's input)
CATEGORICAL: dict[str, tuple[int, ...]] = {"elevel": tuple(range(5)), "car": tuple(range(1, 21)),
                                           "zipcode": tuple(range(9))}
FEATURES = NUMERIC + tuple(CATEGORICAL)
CLASSES = ("0", "1")  # the generator's groups; the score driftline gets is P("1"), its second class
REGIONS = ("north", "central", "south")
SHIFT_AGE = 50  # draw(shift=...) thins out applicants younger than this


def region(zipcode: int) -> str:
    """The segment of a zip code: 0-2 north, 3-5 central, 6-8 south."""
    return REGIONS[zipcode // 3]


@dataclass(frozen=True, slots=True)
class Example:
    """One applicant (the generator's nine attributes) and the true group, ``"0"`` or ``"1"``."""

    features: dict[str, float | int]
    label: str

    @property
    def region(self) -> str:
        return region(int(self.features["zipcode"]))


def stream(seed: int, shift: float = 0.0) -> Iterator[Example]:
    """An endless stream of applicants; ``shift`` in [0, 1] thins out the young ones (see the module doc)."""
    if not 0.0 <= shift <= 1.0:
        raise ValueError(f"shift must be in [0, 1], got {shift}")
    keep = random.Random(seed + 1)
    for x, y in synth.Agrawal(classification_function=CLASSIFICATION_FUNCTION, seed=seed):
        if shift and x["age"] < SHIFT_AGE and keep.random() < shift:
            continue
        yield Example(dict(x), CLASSES[int(y)])


def draw(n: int, seed: int, shift: float = 0.0) -> list[Example]:
    """``n`` applicants of ``stream(seed, shift)``."""
    examples = stream(seed, shift)
    return [next(examples) for _ in range(n)]


def corrupt_segment(examples: list[Example], segment: str) -> list[Example]:
    """The same examples with the labels of one region inverted (a broken label join for that region)."""
    if segment not in REGIONS:
        raise ValueError(f"segment must be one of {REGIONS}, got {segment!r}")
    flipped = {CLASSES[0]: CLASSES[1], CLASSES[1]: CLASSES[0]}
    return [Example(e.features, flipped[e.label]) if e.region == segment else e for e in examples]
