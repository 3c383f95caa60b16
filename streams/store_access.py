"""Who driftline is to a ClickHouse server, and how it checks the server: the arguments of the one client factory.

``StoreAccess`` holds the user, the password (a ``SecretStr``: shown as ``**********``) and the TLS checks of
``DRIFTLINE_CLICKHOUSE_*``; ``client_kwargs`` turns a server URL and them into ``clickhouse_connect.get_client``'s
keywords, used by ``store.connect`` only, with the session settings a replicated cluster needs
(``CLUSTER_SESSION``). An embedded chDB store has no users and no network: none of this applies to it.
``redacted`` keeps a password written into the URL out of error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pydantic import SecretStr

if TYPE_CHECKING:  # annotations only: ``driftline sql`` imports the gateway and should start fast
    from driftline.streams.config.settings import Settings


# Every session on a cluster. An INSERT into a Distributed table returns once each shard has stored its rows (and
# its replicated table has checked the insert_deduplication_token), as the writers assume when they commit their
# Kafka offsets after it; in background mode it returns once the rows are queued on the node it reached, which can
# still lose them or write them after a reader looked. insert_distributed_sync: the older name of
# distributed_foreground_insert, which servers before and after the rename both know. IN subqueries over a
# Distributed table run on each shard against its local table: every one driftline runs compares rows of one
# model, all on one shard (ClickHouse refuses them by default, 'deny').
CLUSTER_SESSION = {"insert_distributed_sync": 1, "distributed_product_mode": "local"}


@dataclass(frozen=True, slots=True)
class StoreAccess:
    """Credentials and TLS checks for a ClickHouse server; empty user/password: those in the URL, else
    ``default`` with no password."""

    user: str = ""
    password: SecretStr = field(default=SecretStr(""), repr=False)
    verify: bool = True  # check the server's certificate (https)
    ca_location: str = ""  # PEM file of the CA that signed it; empty: the system's CAs
    cluster: str = ""  # the server's replicated cluster (schemas/cluster.py); empty: a single node

    @classmethod
    def of(cls, settings: Settings) -> StoreAccess:
        return cls(settings.clickhouse_user, settings.clickhouse_password, settings.clickhouse_verify,
                   settings.clickhouse_ca_location, settings.clickhouse_cluster)


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
    if access.cluster:
        kwargs["settings"] = dict(CLUSTER_SESSION)
    return kwargs


def redacted(url: str) -> str:
    """``url`` with any password in it replaced, for messages."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)).geturl()
