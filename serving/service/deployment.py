"""Which model version serves requests, and how it is switched: atomically, idempotently, only to a known one.

Requests read ``Deployment.active`` once and use that object (model and version name together) for the whole
request, so a switch never fails or splits a request: the ones that read it before the switch answer with
the old version, the ones after with the new. A switch loads and checks the target's weights first, records
the new state in ``active.json``, then replaces ``active`` with one reference assignment. Switches are
serialised by a lock that requests never take.

Rollback events are acted on once per event id (the ids are kept in ``active.json``, the last
``remember`` of them, so a redelivery after a restart is recognised too). A rollback is refused when its
target is not in the registry, cannot be loaded, or when it rolls back a version that is not the one
serving (``from_version`` differs): a late rollback must not undo a newer release.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from enum import StrEnum

from driftline.serving.service.metrics import ServiceMetrics
from driftline.serving.service.registry import (
    DeploymentState,
    LoadedVersion,
    Registry,
    RegistryError,
    UnknownVersion,
)

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What a switch request came to."""

    APPLIED = "applied"
    ALREADY_ACTIVE = "already_active"
    DUPLICATE = "duplicate"
    UNKNOWN_VERSION = "unknown_version"
    UNUSABLE_VERSION = "unusable_version"
    STALE = "stale"


class Deployment:
    """The version serving one model's requests."""

    def __init__(self, registry: Registry, metrics: ServiceMetrics, remember: int = 1000) -> None:
        versions = registry.versions()
        if not versions:
            raise RegistryError(f"{registry.path} holds no version of {registry.model_id}")
        self.registry = registry
        self.metrics = metrics
        self._remember = remember
        self._lock = threading.Lock()
        state = registry.read_state()
        version = versions[0]
        if state is not None and state.version in registry:
            version = state.version
        elif state is not None:
            log.error("the saved active version %s of %s is not registered; serving %s", state.version,
                      registry.model_id, version)
        self._applied: OrderedDict[str, None] = OrderedDict.fromkeys(state.applied_event_ids if state else ())
        self.active: LoadedVersion = registry.load(version)
        self.active_since = time.time()
        metrics.show_active(version, versions)
        log.info("serving %s version %s (sha256 %s)", registry.model_id, version, self.active.sha256[:12])

    def switch(self, version: str, *, trigger: str, reason: str, event_id: str | None = None,
               from_version: str | None = None) -> Outcome:
        """Serve ``version`` from now on, unless the request is refused or was already handled."""
        with self._lock:
            if event_id is not None and event_id in self._applied:
                return Outcome.DUPLICATE
            outcome, target = self._decide(version, from_version)
            if event_id is not None:
                self._applied[event_id] = None
                while len(self._applied) > self._remember:
                    self._applied.popitem(last=False)
            previous = self.active.version
            if target is not None or event_id is not None:
                self._save(target.version if target else previous, reason if target else f"{reason} ({outcome})")
            if target is not None:
                self.active = target  # the switch: one reference assignment, read once by each request
                self.active_since = time.time()
                self.metrics.switches.labels(trigger=trigger).inc()
                self.metrics.show_active(target.version, self.registry.versions())
                log.warning("switched %s from version %s to %s: %s", self.registry.model_id, previous,
                            target.version, reason)
            elif outcome is not Outcome.ALREADY_ACTIVE:
                log.error("refused to switch %s to version %r (%s): %s", self.registry.model_id, version, outcome,
                          reason)
            return outcome

    def _decide(self, version: str, from_version: str | None) -> tuple[Outcome, LoadedVersion | None]:
        if version not in self.registry:
            return Outcome.UNKNOWN_VERSION, None
        if version == self.active.version:
            return Outcome.ALREADY_ACTIVE, None
        if from_version is not None and from_version != self.active.version:
            return Outcome.STALE, None
        try:
            return Outcome.APPLIED, self.registry.load(version)
        except UnknownVersion:
            return Outcome.UNKNOWN_VERSION, None
        except RegistryError as exc:
            log.error("version %s of %s cannot be loaded: %s", version, self.registry.model_id, exc)
            return Outcome.UNUSABLE_VERSION, None

    def _save(self, version: str, reason: str) -> None:
        try:
            self.registry.write_state(DeploymentState(version, tuple(self._applied)), reason)
        except RegistryError as exc:
            # Serving the version asked for matters more than remembering it: a restart would serve the
            # previously saved version, and the log says why.
            log.error("the deployment state was not saved: %s", exc)
