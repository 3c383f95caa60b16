"""Reading the configuration file: YAML/TOML parsing, merging, and errors that name the key.

Owns `MonitoringConfig` (the resolved file) and `ConfigError`. The file's sections are deep-merged as plain
mappings *before* validation (defaults <- model <- version), so an override names only the keys it changes.
A YAML mapping that repeats a key is an error, and a misspelt key is reported with the closest known key.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from driftline.errors import ConfigError
from driftline.streams.config.model_config.schema import FileSchema, ModelConfig, ResolvedModelConfig, canonical, digest
from driftline.streams.config.settings import Settings

SUFFIXES = (".yaml", ".yml", ".toml")


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        out[key] = _deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def _str_keys(data: Any) -> Any:
    """YAML reads `versions: {3: ...}` with an int key; model ids and versions are strings."""
    if isinstance(data, dict):
        return {str(k): _str_keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_str_keys(v) for v in data]
    return data


def _inner(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        return next(a for a in get_args(tp) if a is not type(None))
    return tp


def _known_keys(root: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `path` (a validation error's location) in the schema rooted at `root`."""
    tp: Any = root
    for part in path:
        tp = _inner(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part not in tp.model_fields:
                return []
            tp = tp.model_fields[part].annotation
        elif get_origin(tp) in (dict, list, tuple):
            tp = get_args(tp)[-1] if get_origin(tp) is not tuple else get_args(tp)[0]
        else:
            return []
    tp = _inner(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _loc(parts: tuple[Any, ...]) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text or "(top level)"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problems(exc: ValidationError, root: type[BaseModel], prefix: tuple[Any, ...] = ()) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        where = _loc(prefix + loc)
        if err["type"] == "extra_forbidden":
            known = _known_keys(root, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known)
            out.append(f"{where}: unknown key ({hint})")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(value, dict) else f" (got {_short(value)})"
        out.append(f"{where}: {msg}{shown}")
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML mapping that repeats a key is an error, not a silent override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _parse(path: Path) -> Any:
    if path.suffix not in SUFFIXES:
        raise ConfigError(str(path), [f"unsupported file type {path.suffix!r}: use {', '.join(SUFFIXES)}"])
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "YAML"
        raise ConfigError(str(path), [f"not valid {kind}: {exc}".replace("\n", " ")]) from None


@dataclass(frozen=True)
class MonitoringConfig:
    """The whole file, resolved: defaults, each configured model, and each configured model version.

    Every key is optional: a model missing from the file is monitored with the defaults, on all of its features.

    >>> cfg = MonitoringConfig.from_dict({"defaults": {"window_seconds": 300},
    ...                                    "models": {"fraud": {"versions": {3: {"slice_pairs": True}}}}})
    >>> r = cfg.resolve("fraud", "3")
    >>> r.window_seconds, r.slice_pairs, cfg.resolve("fraud", "2").slice_pairs, cfg.resolve("churn", "1").window_seconds
    (300, True, False, 300)
    """

    defaults: ModelConfig = field(default_factory=ModelConfig)
    models: Mapping[str, ModelConfig] = field(default_factory=dict)
    versions: Mapping[tuple[str, str], ModelConfig] = field(default_factory=dict)
    source: str = "<built-in defaults>"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MonitoringConfig:
        """Read and validate a ``.yaml`` / ``.yml`` / ``.toml`` file; raises `ConfigError`."""
        p = Path(path)
        return cls.from_dict(_parse(p), source=str(p))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> MonitoringConfig:
        """Validate parsed file content; raises `ConfigError` naming every bad key."""
        data = {} if data is None else _str_keys(data)
        if not isinstance(data, dict):
            raise ConfigError(source, ["the top level must be a mapping with 'defaults' and/or 'models'"])
        for section in ("defaults", "models"):
            data[section] = data.get(section) or {}
        if isinstance(data["models"], dict):
            data["models"] = {m: e or {} for m, e in data["models"].items()}
        try:
            FileSchema.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(source, _problems(exc, FileSchema)) from None
        problems: list[str] = []

        def check(raw: dict[str, Any], where: tuple[str, ...]) -> ModelConfig:
            try:
                return ModelConfig.model_validate(raw)
            except ValidationError as exc:
                problems.extend(_problems(exc, ModelConfig, where))
                return ModelConfig()

        defaults = check(data["defaults"], ("defaults",))
        models, versions = {}, {}
        for model_id, entry in data["models"].items():
            raw = {k: v for k, v in entry.items() if k != "versions"}
            merged = _deep_merge(data["defaults"], raw)
            models[model_id] = check(merged, ("models", model_id))
            for model_version, override in entry.get("versions", {}).items():
                where = ("models", model_id, "versions", model_version)
                versions[model_id, model_version] = check(_deep_merge(merged, override), where)
        if problems:
            raise ConfigError(source, problems)
        return cls(defaults, models, versions, source)

    def resolve(self, model_id: str, model_version: str, settings: Settings | None = None) -> ResolvedModelConfig:
        """defaults <- model <- version; with `settings`, unset window / lateness take the worker's values."""
        base = self.versions.get((model_id, model_version), self.models.get(model_id, self.defaults))
        # Only the keys the file set: which knobs were written decides what the false-alarm budget may set.
        data = base.model_dump(exclude_unset=True)
        if settings is not None:
            if data.get("window_seconds") is None:
                data["window_seconds"] = settings.window_seconds
            if data.get("allowed_lateness_seconds") is None:
                data["allowed_lateness_seconds"] = settings.allowed_lateness_seconds
        return ResolvedModelConfig.model_validate({**data, "model_id": model_id, "model_version": model_version})

    def canonical_json(self) -> str:
        """The resolved configuration of the whole file, sorted and compact."""
        models: dict[str, Any] = {
            m: {"config": c.canonical_data(), "versions": {}} for m, c in self.models.items()
        }
        for (m, v), c in self.versions.items():
            models[m]["versions"][v] = c.canonical_data()
        return canonical({"defaults": self.defaults.canonical_data(), "models": models})

    @cached_property
    def version(self) -> str:
        """First 12 hex digits of the SHA-256 of `canonical_json`: changes only when a setting does."""
        return digest(self.canonical_json())
