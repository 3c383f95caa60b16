"""Who driftline is to a ClickHouse server, and how it checks the server: the arguments of the one client factory.

``StoreAccess`` holds the user, the password (a ``SecretStr``: shown as ``**********``) and the TLS checks of
``DRIFTLINE_CLICKHOUSE_*``; ``client_kwargs`` turns a server URL and them into ``clickhouse_connect.get_client``'s
keywords, used by ``store.connect`` only. An embedded chDB store has no users and no network: none of this
applies to it. ``redacted`` keeps a password written into the URL out of error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pydantic import SecretStr

if TYPE_CHECKING:  # annotations only: ``driftline sql`` imports the gateway and should start fast
    from driftline.streams.config.settings import Settings


@dataclass(frozen=True, slots=True)
class StoreAccess:
    """Credentials and TLS checks for a ClickHouse server; empty user/password: those in the URL, else
    ``default`` with no password."""

    user: str = ""
    password: SecretStr = field(default=SecretStr(""), repr=False)
    verify: bool = True  # check the server's certificate (https)
    ca_location: str = ""  # PEM file of the CA that signed it; empty: the system's CAs

    @classmethod
    def of(cls, settings: Settings) -> StoreAccess:
        return cls(settings.clickhouse_user, settings.clickhouse_password, settings.clickhouse_verify,
                   settings.clickhouse_ca_location)


def client_kwargs(url: str, access: StoreAccess) -> dict[str, Any]:
    """``get_client`` keywords for an ``http(s)://`` URL: the settings' credentials before the URL's."""
    parsed = urlparse(url)
    secure = parsed.scheme == "https"
    kwargs: dict[str, Any] = {
        "host": parsed.hostname or "localhost",
        "port": parsed.port or (8443 if secure else 8123),
        "username": access.user or parsed.username or "default",
        "password": access.password.get_secret_value() or parsed.password or "",
        "secure": secure,
    }
    if secure:
        kwargs["verify"] = access.verify
        if access.ca_location:
            kwargs["ca_cert"] = access.ca_location
    return kwargs


def redacted(url: str) -> str:
    """``url`` with any password in it replaced, for messages."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)).geturl()
