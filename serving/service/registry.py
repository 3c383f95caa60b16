"""A small file-based model registry under the state directory, and the service's deployment state.

Layout, under ``<DRIFTLINE_HOME>/registry/<model_id>/``::

    <version>/model.pt        the weights (a torch state dict)
    <version>/metadata.json   sha256 of model.pt, training data and settings, holdout accuracy per region
    active.json               the version deployed, and the rollback event ids already applied

A version directory is written whole under a temporary name, flushed, then renamed into place, so a reader
never sees half a version; ``active.json`` is replaced the same way. Weights are loaded with
``weights_only=True`` and refused when their hash differs from the recorded one. Version names are plain
(letters, digits, ``.``, ``_``, ``-``, no leading dot), so a ``to_version`` read off Kafka can never name a
path outside the registry. ``bootstrap`` trains the two versions the reference service ships with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from driftline.errors import DriftlineError
from driftline.serving.service import data
from driftline.serving.service.model import Classifier, train

log = logging.getLogger(__name__)
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
WEIGHTS, METADATA, ACTIVE = "model.pt", "metadata.json", "active.json"
BAD_SEGMENT = "south"  # the region version 2 was trained with inverted labels for


class RegistryError(DriftlineError, RuntimeError):
    """The model registry cannot be read or written, or a version's weights do not match their hash."""


class UnknownVersion(RegistryError):
    """The registry holds no version by that name (or the name is not a valid version name)."""


@dataclass(frozen=True, slots=True)
class LoadedVersion:
    """A registered version with its weights in memory, ready to predict."""

    version: str
    sha256: str
    model: Classifier
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeploymentState:
    """What ``active.json`` holds: the deployed version and the rollback event ids already applied."""

    version: str
    applied_event_ids: tuple[str, ...] = ()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, payload: bytes) -> None:
    with path.open("wb") as out:
        out.write(payload)
        out.flush()
        os.fsync(out.fileno())


def _version_key(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)  # 2 before 10; named versions after numbered ones


class Registry:
    """One model's versions under ``root / model_id``."""

    def __init__(self, root: Path, model_id: str) -> None:
        if not VERSION_NAME.match(model_id):
            raise RegistryError(f"model_id {model_id!r} cannot name a registry directory")
        self.model_id = model_id
        self.path = root / model_id

    def versions(self) -> list[str]:
        """The registered versions, oldest first (numeric names in numeric order)."""
        if not self.path.is_dir():
            return []
        return sorted((p.name for p in self.path.iterdir()
                       if VERSION_NAME.match(p.name) and (p / METADATA).is_file()), key=_version_key)

    def __contains__(self, version: object) -> bool:
        return isinstance(version, str) and bool(VERSION_NAME.match(version)) and (self.path / version / METADATA
                                                                                  ).is_file()

    def metadata(self, version: str) -> dict[str, Any]:
        if version not in self:
            raise UnknownVersion(f"{self.model_id} has no registered version {version!r} "
                                 f"(registered: {', '.join(self.versions()) or 'none'})")
        try:
            return json.loads((self.path / version / METADATA).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {self.path / version / METADATA}: {exc}") from exc

    def load(self, version: str) -> LoadedVersion:
        """The version's model, after checking its weights against the recorded hash."""
        meta = self.metadata(version)
        weights = self.path / version / WEIGHTS
        try:
            digest = _sha256(weights)
        except OSError as exc:
            raise RegistryError(f"cannot read {weights}: {exc}") from exc
        if digest != meta.get("sha256"):
            raise RegistryError(f"{weights}: sha256 {digest} differs from the recorded {meta.get('sha256')}")
        model = Classifier()
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
            raise RegistryError(f"cannot load {weights}: {exc}") from exc
        model.eval()
        return LoadedVersion(version, digest, model, meta)

    def register(self, version: str, model: Classifier, metadata: dict[str, Any], *,
                 exist_ok: bool = False) -> dict[str, Any]:
        """Write a new version atomically; return its metadata (with ``sha256``, ``version``, ``created_at``).

        A version is immutable: registering an existing name raises, or with ``exist_ok`` returns the
        metadata already there (two processes bootstrapping the same registry at once).
        """
        if not VERSION_NAME.match(version):
            raise RegistryError(f"{version!r} is not a valid version name ({VERSION_NAME.pattern})")
        final = self.path / version
        if final.exists():
            if exist_ok:
                return self.metadata(version)
            raise RegistryError(f"{self.model_id} version {version} is already registered")
        self.path.mkdir(parents=True, exist_ok=True)
        staging = self.path / f".tmp-{version}-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            torch.save(model.state_dict(), staging / WEIGHTS)
            with (staging / WEIGHTS).open("rb+") as weights:
                os.fsync(weights.fileno())
            meta = {**metadata, "model_id": self.model_id, "version": version,
                    "sha256": _sha256(staging / WEIGHTS), "created_at": datetime.now(UTC).isoformat()}
            _write_durably(staging / METADATA, json.dumps(meta, indent=2, sort_keys=True).encode())
            _fsync_dir(staging)
            os.rename(staging, final)  # fails when another process renamed its copy in first
            _fsync_dir(self.path)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if exist_ok and final.exists():
                return self.metadata(version)
            raise RegistryError(f"cannot register {self.model_id} version {version}: {exc}") from exc
        log.info("registered %s version %s (sha256 %s)", self.model_id, version, meta["sha256"][:12])
        return meta

    def read_state(self) -> DeploymentState | None:
        """The saved deployment state; None when there is none or it cannot be read (logged)."""
        path = self.path / ACTIVE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return DeploymentState(str(raw["version"]), tuple(str(i) for i in raw.get("applied_event_ids", ())))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("ignoring unreadable deployment state %s: %s", path, exc)
            return None

    def write_state(self, state: DeploymentState, reason: str) -> None:
        """Replace ``active.json`` atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        staging = self.path / f".{ACTIVE}.{uuid.uuid4().hex}"
        payload = {"version": state.version, "applied_event_ids": list(state.applied_event_ids),
                   "reason": reason, "updated_at": datetime.now(UTC).isoformat()}
        try:
            _write_durably(staging, json.dumps(payload, indent=2).encode())
            os.replace(staging, self.path / ACTIVE)
            _fsync_dir(self.path)
        except OSError as exc:
            staging.unlink(missing_ok=True)
            raise RegistryError(f"cannot write {self.path / ACTIVE}: {exc}") from exc


def bootstrap(registry: Registry, examples: int = 20_000, seed: int = 7) -> None:
    """Train and register versions 1 and 2 when the registry holds no version yet.

    Version 1 learns from clean data. Version 2 is the release that goes wrong: more data, but its labels for
    the ``south`` region were inverted by a broken label join, so it is about as good as version 1 in the
    north and centre and mostly wrong in the south. Both are scored on the same clean holdout.
    """
    if registry.versions():
        return
    holdout = data.draw(5_000, seed=seed + 1000)
    plans = [("1", data.draw(examples, seed=seed), None),
             ("2", data.corrupt_segment(data.draw(examples * 3 // 2, seed=seed + 1), BAD_SEGMENT), BAD_SEGMENT)]
    for version, training_set, corrupted in plans:
        model, report = train(training_set, holdout, seed=seed)
        registry.register(version, model, {
            "framework": f"torch {torch.__version__}",
            "architecture": "Classifier(hidden=64): MLP 40-64-64-2",
            "dataset": {"generator": "river.datasets.synth.Agrawal",
                        "classification_function": data.CLASSIFICATION_FUNCTION, "seed": seed,
                        "examples": report.examples,
                        "corrupted_segment": {"region": corrupted, "how": "labels inverted"} if corrupted else None},
            "training": {"epochs": report.epochs, "seed": report.seed, "optimiser": "Adam", "lr": 1e-2},
            "holdout": {"examples": len(holdout), "accuracy": report.accuracy,
                        "accuracy_by_region": report.accuracy_by_region},
        }, exist_ok=True)
