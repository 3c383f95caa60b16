"""Alert routes: where an alert transition is delivered, which alerts each route takes, and its secret.

A route is configured in the settings (``DRIFTLINE_ALERT_ROUTES``, a JSON list, or ``[[driftline.alert_routes]]``
tables in the TOML config file) and names the environment variable that holds its secret, never the secret
itself, so the settings can be printed, logged and committed. `resolve` reads the secrets once, at start.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from driftline.errors import SettingsError
from driftline.streams.actions.decisions import Severity

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES: tuple[Severity, ...] = ("critical", "error", "warning", "info")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RouteMissingSecret(SettingsError):
    """A route's secret environment variable is unset or empty; the message names the variable and route."""


class RouteSpec(BaseModel):
    """One configured route: a destination, the alerts it takes, and how hard to try.

    ``models`` are globs over model ids (``fnmatch`` syntax, case-sensitive); ``severities`` the alert
    severities taken. A failed attempt (429, 5xx, connection error, timeout) is retried after
    ``retry_base_seconds * 2**n`` at most, drawn uniformly from zero (full jitter), each wait capped by
    ``retry_max_delay_seconds`` (a ``Retry-After`` too); no attempt starts later than ``max_retry_seconds``
    after the first, and the delivery then fails.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Named in outcomes and metrics.")
    kind: Literal["pagerduty", "webhook"]
    url: str = Field(default="", description="Empty for pagerduty: the Events API v2 enqueue URL.")
    models: tuple[str, ...] = Field(default=("*",), min_length=1)
    severities: tuple[Severity, ...] = Field(default=SEVERITIES, min_length=1)
    routing_key_env: str | None = Field(default=None, description="pagerduty: the variable holding the "
                                                                  "integration (routing) key.")
    secret_env: str | None = Field(default=None, description="webhook: the variable holding the HMAC secret.")
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    retry_base_seconds: float = Field(default=1.0, gt=0, le=3600)
    retry_max_delay_seconds: float = Field(default=60.0, gt=0, le=3600)
    max_retry_seconds: float = Field(default=600.0, ge=0, le=86400)

    @field_validator("routing_key_env", "secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable name (letters, digits, '_')")
        return value

    @model_validator(mode="after")
    def _complete(self) -> RouteSpec:
        if self.kind == "pagerduty":
            if not self.routing_key_env:
                raise ValueError(f"route {self.name!r}: a pagerduty route needs routing_key_env")
            if not self.url:
                object.__setattr__(self, "url", PAGERDUTY_EVENTS_URL)
        elif not self.secret_env:
            raise ValueError(f"route {self.name!r}: a webhook route needs secret_env (its HMAC secret)")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"route {self.name!r}: url must start with http:// or https://")
        return self

    @property
    def secret_variable(self) -> str:
        """The environment variable holding this route's secret."""
        return self.routing_key_env if self.kind == "pagerduty" else self.secret_env  # type: ignore[return-value]


def unique_names(routes: tuple[RouteSpec, ...]) -> tuple[RouteSpec, ...]:
    """Reject two routes of one name: outcomes and metrics are told apart by it."""
    seen: set[str] = set()
    for route in routes:
        if route.name in seen:
            raise ValueError(f"route name {route.name!r} is used twice")
        seen.add(route.name)
    return routes


@dataclass(frozen=True, slots=True)
class Route:
    """A route with its secret read: what the dispatcher delivers through. The secret never shows in a repr."""

    spec: RouteSpec
    secret: SecretStr

    @property
    def name(self) -> str:
        return self.spec.name

    def takes(self, model_id: str, severity: str) -> bool:
        """Whether an alert of ``model_id`` at ``severity`` goes through this route.

        >>> route = Route(RouteSpec(name="r", kind="webhook", url="http://x", secret_env="S",
        ...                         models=("fraud-*",), severities=("critical",)), SecretStr("s"))
        >>> route.takes("fraud-eu", "critical"), route.takes("fraud-eu", "info"), route.takes("churn", "critical")
        (True, False, False)
        >>> route
        Route(spec=RouteSpec(name='r', ...), secret=SecretStr('**********'))
        """
        return severity in self.spec.severities and any(fnmatch.fnmatchcase(model_id, g) for g in self.spec.models)


def resolve(specs: Sequence[RouteSpec], environ: Mapping[str, str]) -> list[Route]:
    """The routes with their secrets read from ``environ``; raises `RouteMissingSecret` for an unset one."""
    routes = []
    for spec in specs:
        value = environ.get(spec.secret_variable, "")
        if not value:
            raise RouteMissingSecret(f"alert route {spec.name!r}: environment variable {spec.secret_variable} "
                                     f"({'routing_key_env' if spec.kind == 'pagerduty' else 'secret_env'}) "
                                     "is not set or empty")
        routes.append(Route(spec, SecretStr(value)))
    return routes
