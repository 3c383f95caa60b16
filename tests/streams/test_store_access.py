"""ClickHouse credentials and TLS settings reach the one client factory; chDB ignores them; no password in text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from driftline.errors import StoreError
from driftline.streams import store
from driftline.streams.config.settings import Settings
from driftline.streams.store_access import StoreAccess, client_kwargs

PASSWORD = "ch-pw-1d9a7c-never-printed"


class _Client:
    """What connect_read_only needs of a client."""

    def __init__(self) -> None:
        self.settings: dict[str, object] = {}

    def set_client_setting(self, key: str, value: object) -> None:
        self.settings[key] = value


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def get_client(**kwargs: Any) -> _Client:
        seen.append(kwargs)
        return _Client()

    monkeypatch.setattr(store.clickhouse_connect, "get_client", get_client)
    return seen


def test_settings_credentials_and_tls_reach_get_client(calls: list[dict[str, Any]], tmp_path: Path):
    ca = tmp_path / "ca.pem"
    settings = Settings(clickhouse_url="https://ch.internal:9443", clickhouse_user="driftline",
                        clickhouse_password=PASSWORD, clickhouse_ca_location=str(ca))
    store.connect(settings.clickhouse_url, StoreAccess.of(settings))
    assert calls == [{"host": "ch.internal", "port": 9443, "username": "driftline", "password": PASSWORD,
                      "secure": True, "verify": True, "ca_cert": str(ca)}]


def test_the_read_only_client_takes_the_same_access(calls: list[dict[str, Any]]):
    client = store.connect_read_only("https://ch:8443", {"max_result_rows": 5},
                                     StoreAccess("reader", SecretStr(PASSWORD), verify=False))
    assert calls == [{"host": "ch", "port": 8443, "username": "reader", "password": PASSWORD, "secure": True,
                      "verify": False}]
    assert client.settings == {"max_result_rows": 5, "readonly": 1}


def test_plain_http_has_no_tls_keywords_and_the_url_credentials_still_work():
    assert client_kwargs("http://u:p@ch:8123", StoreAccess()) == {
        "host": "ch", "port": 8123, "username": "u", "password": "p", "secure": False}
    assert client_kwargs("https://ch", StoreAccess(verify=False))["verify"] is False


def test_chdb_ignores_them(calls: list[dict[str, Any]], tmp_path: Path):
    store.connect(f"chdb://{tmp_path / 'ch'}", StoreAccess("u", SecretStr(PASSWORD)))
    assert calls == [{"dsn": f"chdb://{tmp_path / 'ch'}"}]


def test_a_failed_connection_names_the_url_without_its_password(monkeypatch: pytest.MonkeyPatch):
    def refuse(**kwargs: Any) -> object:
        raise OSError("connection refused")

    monkeypatch.setattr(store.clickhouse_connect, "get_client", refuse)
    with pytest.raises(StoreError) as info:
        store.connect(f"http://admin:{PASSWORD}@127.0.0.1:1", StoreAccess(password=SecretStr(PASSWORD)))
    assert "http://admin:***@127.0.0.1:1" in str(info.value) and PASSWORD not in str(info.value)
    assert PASSWORD not in repr(StoreAccess(password=SecretStr(PASSWORD)))
