"""Alert routes in the settings (environment JSON or TOML tables), which alerts each takes, and its secret:
read at start, named when missing, never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driftline.errors import ConfigurationError, SettingsError
from driftline.streams.actions.dispatch.routes import PAGERDUTY_EVENTS_URL, RouteMissingSecret, resolve
from driftline.streams.config.settings import load_settings

PD = {"name": "pd-main", "kind": "pagerduty", "routing_key_env": "PD_KEY", "severities": ["critical", "error"]}
HOOK = {"name": "hook", "kind": "webhook", "url": "https://hooks.example/driftline", "secret_env": "HOOK_SECRET",
        "models": ["fraud-*", "churn"], "timeout_seconds": 2, "max_retry_seconds": 30}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DRIFTLINE_ALERT_ROUTES", "DRIFTLINE_CONFIG", "PD_KEY", "HOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path))


def test_routes_from_the_environment_as_json_with_defaults(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DRIFTLINE_ALERT_ROUTES", json.dumps([PD, HOOK]))
    pd, hook = load_settings().alert_routes
    assert (pd.name, pd.url, pd.models, pd.severities) == ("pd-main", PAGERDUTY_EVENTS_URL, ("*",),
                                                            ("critical", "error"))
    assert (hook.url, hook.models, hook.timeout_seconds, hook.max_retry_seconds) == (
        "https://hooks.example/driftline", ("fraud-*", "churn"), 2.0, 30.0)
    assert hook.severities == ("critical", "error", "warning", "info")
    assert load_settings(alert_routes=[]).alert_routes == ()


def test_routes_from_the_toml_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    config = tmp_path / "driftline.toml"
    config.write_text('[driftline]\ntopic_prefix = "x."\n\n[[driftline.alert_routes]]\nname = "pd-main"\n'
                      'kind = "pagerduty"\nrouting_key_env = "PD_KEY"\n\n[[driftline.alert_routes]]\nname = "hook"\n'
                      'kind = "webhook"\nurl = "http://127.0.0.1:9/x"\nsecret_env = "HOOK_SECRET"\n'
                      'models = ["fraud-*"]\n')
    monkeypatch.setenv("DRIFTLINE_CONFIG", str(config))
    assert [r.name for r in load_settings().alert_routes] == ["pd-main", "hook"]


@pytest.mark.parametrize(("routes", "message"), [
    ([{**HOOK, "url": "ftp://x"}], r"DRIFTLINE_ALERT_ROUTES\[0\]: .*url must start with http"),
    ([PD, {**HOOK, "timeout_seconds": 0}], r"DRIFTLINE_ALERT_ROUTES\[1\]\.timeout_seconds: .*greater than 0"),
    ([{**PD, "routing_key_env": None}], r"pagerduty route needs routing_key_env"),
    ([{**HOOK, "secret_env": None}], r"webhook route needs secret_env"),
    ([{**HOOK, "secret_env": "NOT A NAME"}], r"\.secret_env: .*environment variable name"),
    ([{**HOOK, "kind": "slack"}], r"\[0\]\.kind: "),
    ([{**HOOK, "severities": ["loud"]}], r"\[0\]\.severities\[0\]: "),
    ([{**HOOK, "colour": "red"}], r"\[0\]\.colour: Extra inputs"),
    ([PD, {**HOOK, "name": "pd-main"}], r"route name 'pd-main' is used twice"),
])
def test_a_bad_route_is_a_settings_error_naming_the_key(monkeypatch: pytest.MonkeyPatch, routes: list,
                                                        message: str):
    monkeypatch.setenv("DRIFTLINE_ALERT_ROUTES", json.dumps(routes))
    with pytest.raises(SettingsError, match=message) as info:
        load_settings()
    assert "DRIFTLINE_ALERT_ROUTES" in str(info.value)


def test_routes_that_are_not_json_say_so(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DRIFTLINE_ALERT_ROUTES", "[{name: pd}")
    with pytest.raises(SettingsError, match=r"DRIFTLINE_ALERT_ROUTES: not valid JSON \(got '\[\{name: pd\}'\)"):
        load_settings()


def test_a_route_takes_its_models_and_severities(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DRIFTLINE_ALERT_ROUTES", json.dumps([PD, HOOK]))
    pd, hook = resolve(load_settings().alert_routes, {"PD_KEY": "k", "HOOK_SECRET": "s"})
    assert pd.takes("anything", "error") and not pd.takes("anything", "warning")
    assert hook.takes("fraud-eu", "info") and hook.takes("churn", "warning")
    assert not hook.takes("churn-v2", "critical") and not hook.takes("Fraud-eu", "critical")


def test_a_missing_secret_names_the_variable_and_route_and_a_secret_never_shows(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DRIFTLINE_ALERT_ROUTES", json.dumps([PD, HOOK]))
    settings = load_settings()
    with pytest.raises(RouteMissingSecret, match="alert route 'hook': environment variable HOOK_SECRET") as info:
        resolve(settings.alert_routes, {"PD_KEY": "pd-s3cret-value"})
    assert isinstance(info.value, ConfigurationError) and "pd-s3cret-value" not in str(info.value)
    with pytest.raises(RouteMissingSecret, match="PD_KEY"):
        resolve(settings.alert_routes, {"PD_KEY": "", "HOOK_SECRET": "x"})
    routes = resolve(settings.alert_routes, {"PD_KEY": "pd-s3cret-value", "HOOK_SECRET": "hook-s3cret-value"})
    shown = repr(routes) + str(routes) + repr(settings) + settings.model_dump_json()
    assert "s3cret-value" not in shown
    assert routes[0].secret.get_secret_value() == "pd-s3cret-value"
