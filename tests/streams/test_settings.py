"""One validated settings object: environment over a TOML file over defaults, errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.streams.config.settings import SettingsError, load_settings
from driftline.streams.pipeline.decode import EventTimeBounds
from driftline.streams.pipeline.windows import JUMP_MS, JUMP_RECORDS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("DRIFTLINE_"):
            monkeypatch.delenv(key)


def test_defaults_derive_the_embedded_store_from_the_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.clickhouse_url == f"chdb://{tmp_path}/clickhouse"
    assert settings.topic("predictions") == "driftline.predictions"
    assert (settings.window_seconds, settings.allowed_lateness_seconds) == (60, 10.0)
    assert EventTimeBounds.of(settings) == EventTimeBounds(3_600_000, 3650 * 86_400_000)
    assert settings.event_time_jump() == (JUMP_MS, JUMP_RECORDS) == (10_000, 3)


def test_event_time_settings_convert_to_milliseconds(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DRIFTLINE_MAX_CLOCK_SKEW_SECONDS", "300")
    monkeypatch.setenv("DRIFTLINE_MAX_EVENT_AGE_DAYS", "0.5")
    monkeypatch.setenv("DRIFTLINE_EVENT_TIME_JUMP_SECONDS", "2.5")
    monkeypatch.setenv("DRIFTLINE_EVENT_TIME_JUMP_RECORDS", "5")
    settings = load_settings()
    assert EventTimeBounds.of(settings) == EventTimeBounds(300_000, 43_200_000)
    assert settings.event_time_jump() == (2500, 5)


@pytest.mark.parametrize(("var", "value", "message"), [
    ("DRIFTLINE_WINDOW_SECONDS", "0", "DRIFTLINE_WINDOW_SECONDS: Input should be greater than or equal to 1 (got '0')"),
    ("DRIFTLINE_WINDOW_SECONDS", "soon", "DRIFTLINE_WINDOW_SECONDS: Input should be a valid integer"),
    ("DRIFTLINE_CLICKHOUSE_URL", "mysql://x", "DRIFTLINE_CLICKHOUSE_URL: Value error, must start with chdb://"),
    ("DRIFTLINE_TOPIC_PREFIX", "a b", "DRIFTLINE_TOPIC_PREFIX: Value error, may hold only letters"),
    ("DRIFTLINE_KAFKA_PORT", "70000", "DRIFTLINE_KAFKA_PORT: Input should be less than or equal to 65535"),
    ("DRIFTLINE_MAX_CLOCK_SKEW_SECONDS", "-1",
     "DRIFTLINE_MAX_CLOCK_SKEW_SECONDS: Input should be greater than or equal to 0 (got '-1')"),
    ("DRIFTLINE_MAX_EVENT_AGE_DAYS", "0", "DRIFTLINE_MAX_EVENT_AGE_DAYS: Input should be greater than 0"),
    ("DRIFTLINE_EVENT_TIME_JUMP_RECORDS", "0",
     "DRIFTLINE_EVENT_TIME_JUMP_RECORDS: Input should be greater than or equal to 1"),
])
def test_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert message in str(info.value)


def test_the_environment_wins_over_the_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    config = tmp_path / "driftline.toml"
    config.write_text('[driftline]\nwindow_seconds = 30\ntopic_prefix = "acme."\n')
    monkeypatch.setenv("DRIFTLINE_CONFIG", str(config))
    monkeypatch.setenv("DRIFTLINE_WINDOW_SECONDS", "15")
    settings = load_settings()
    assert (settings.window_seconds, settings.topic_prefix) == (15, "acme.")


def test_config_file_problems_name_the_file_and_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    config = tmp_path / "driftline.toml"
    config.write_text("[driftline]\nwindow_secs = 30\n")
    monkeypatch.setenv("DRIFTLINE_CONFIG", str(config))
    with pytest.raises(SettingsError, match="DRIFTLINE_WINDOW_SECS \\(unknown setting\\)"):
        load_settings()
    config.write_text("[driftline\n")
    with pytest.raises(SettingsError, match="is not valid TOML"):
        load_settings()
    monkeypatch.setenv("DRIFTLINE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match="DRIFTLINE_CONFIG: file not found"):
        load_settings()
