"""The reference service's torch classifier: encoding, training, evaluation and inference.

A two-hidden-layer MLP over the six standardised numeric attributes and the one-hot categorical ones. The
standardisation constants are buffers of the module, so a version's weights file alone reproduces its
predictions. Training is deterministic for a given seed and data (one CPU thread order aside), and small
enough to run at a service's first start in a few seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from driftline.serving.service.data import CATEGORICAL, CLASSES, NUMERIC, REGIONS, Example

N_INPUTS = len(NUMERIC) + sum(len(values) for values in CATEGORICAL.values())


def _offsets() -> dict[str, int]:
    """Column of each categorical attribute's first value: they follow the numeric ones, in schema order."""
    offsets, at = {}, len(NUMERIC)
    for name, values in CATEGORICAL.items():
        offsets[name] = at
        at += len(values)
    return offsets


_OFFSETS = _offsets()
_FIRST = {name: values[0] for name, values in CATEGORICAL.items()}


class Classifier(nn.Module):
    """The MLP; ``forward`` takes ``encode()``'s rows and returns class logits."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(len(NUMERIC)))
        self.register_buffer("std", torch.ones(len(NUMERIC)))
        self.net = nn.Sequential(nn.Linear(N_INPUTS, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, len(CLASSES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = len(NUMERIC)
        numeric = (x[:, :k] - self.mean) / self.std
        return self.net(torch.cat([numeric, x[:, k:]], dim=1))


def encode(rows: Sequence[Mapping[str, float | int]]) -> torch.Tensor:
    """Raw numeric attributes then one-hot categorical ones, one row per applicant (float32)."""
    x = np.zeros((len(rows), N_INPUTS), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, name in enumerate(NUMERIC):
            x[i, j] = row[name]
        for name, offset in _OFFSETS.items():
            x[i, offset + int(row[name]) - _FIRST[name]] = 1.0
    return torch.from_numpy(x)


def probabilities(model: Classifier, x: torch.Tensor) -> np.ndarray:
    """P(class) per row, shape (rows, classes); the softmax in float64, so a row sums to 1 within 1e-15."""
    with torch.inference_mode():
        return torch.softmax(model(x).double(), dim=1).numpy()


@dataclass(frozen=True, slots=True)
class TrainingReport:
    """What a training run saw and how well its model did on a clean holdout, per region too."""

    examples: int
    epochs: int
    seed: int
    accuracy: float
    accuracy_by_region: dict[str, float]


def evaluate(model: Classifier, examples: Sequence[Example]) -> tuple[float, dict[str, float]]:
    """Accuracy overall and per region."""
    predicted = probabilities(model, encode([e.features for e in examples])).argmax(axis=1)
    correct = np.array([CLASSES[p] == e.label for p, e in zip(predicted, examples, strict=True)])
    regions = np.array([e.region for e in examples])
    by_region = {r: float(correct[regions == r].mean()) for r in REGIONS if (regions == r).any()}
    return float(correct.mean()), by_region


def train(examples: Sequence[Example], holdout: Sequence[Example], *, seed: int, epochs: int = 15,
          batch_size: int = 256, lr: float = 1e-2) -> tuple[Classifier, TrainingReport]:
    """Fit a fresh ``Classifier`` on ``examples``; score it on ``holdout`` (which should be clean)."""
    torch.manual_seed(seed)
    model = Classifier()
    x = encode([e.features for e in examples])
    y = torch.tensor([CLASSES.index(e.label) for e in examples])
    numeric = x[:, :len(NUMERIC)]
    model.mean.copy_(numeric.mean(dim=0))
    model.std.copy_(numeric.std(dim=0).clamp_min(1e-6))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        permutation = torch.randperm(len(y), generator=order)
        for start in range(0, len(y), batch_size):
            batch = permutation[start:start + batch_size]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    model.eval()
    accuracy, by_region = evaluate(model, holdout)
    return model, TrainingReport(len(examples), epochs, seed, accuracy, by_region)
