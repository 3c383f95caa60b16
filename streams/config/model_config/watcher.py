"""Reloading the configuration file without a restart: `ConfigWatcher`, polled by the worker between batches."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from driftline.streams.config.model_config.loading import ConfigError, MonitoringConfig
from driftline.streams.config.model_config.schema import ResolvedModelConfig

if TYPE_CHECKING:
    from driftline.streams.config.settings import Settings

log = logging.getLogger("driftline.model_config")


class ConfigWatcher:
    """Reloads the file without a restart: the worker calls `poll()` between batches.

    A change is detected by the file's inode, mtime and size (so an editor's atomic rename counts). An
    invalid new file never replaces a working configuration: it is logged once, kept in `error`, and the
    last valid configuration stays `current()` until the file is fixed. The first load must succeed.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.error: ConfigError | None = None
        self._signature = self._stat()
        self._current = MonitoringConfig.load(self.path)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def current(self) -> MonitoringConfig:
        """The latest valid configuration."""
        return self._current

    def poll(self) -> bool:
        """Re-read the file if it changed; True when the configuration's version changed."""
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            new = MonitoringConfig.load(self.path)
        except ConfigError as exc:
            self.error = exc
            log.error("model config rejected, keeping version %s:\n%s", self._current.version, exc)
            return False
        self.error = None
        changed = new.version != self._current.version
        self._current = new
        if changed:
            log.info("model config %s reloaded: version %s", self.path, new.version)
        return changed


def config_source(settings: Settings) -> Callable[[str, str], ResolvedModelConfig]:
    """Resolve a model version's configuration, re-reading the file when it changed (no restart)."""
    if settings.monitoring_config is None:
        built_in = MonitoringConfig()
        return lambda model_id, version: built_in.resolve(model_id, version, settings)
    watcher = ConfigWatcher(settings.monitoring_config)

    def resolve(model_id: str, version: str) -> ResolvedModelConfig:
        watcher.poll()
        return watcher.current().resolve(model_id, version, settings)

    return resolve
