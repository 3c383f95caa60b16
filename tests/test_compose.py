"""docker-compose.yml cannot run here (no Docker engine): validate it against the Compose spec instead."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_follows_the_compose_spec():
    schema = json.loads((ROOT / "tests/data/compose-spec.schema.json").read_text())
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.Draft7Validator(schema).validate(document)
    assert {"kafka", "clickhouse", "worker-summarize", "worker-merge", "prometheus", "grafana", "api", "serve"} <= set(
        document["services"])
    env = document["services"]["worker-merge"]["environment"]
    assert env["DRIFTLINE_CLICKHOUSE_URL"].startswith("http://")


def test_compose_validation_rejects_a_broken_file():
    schema = json.loads((ROOT / "tests/data/compose-spec.schema.json").read_text())
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    document["services"]["kafka"]["ports"] = {"not": "a list"}
    try:
        jsonschema.Draft7Validator(schema).validate(document)
    except jsonschema.ValidationError:
        return
    raise AssertionError("an invalid compose file passed validation")


def test_the_api_service_requires_a_token_and_grafana_is_provisioned_from_the_repository():
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api = document["services"]["api"]
    assert api["environment"]["DRIFTLINE_API_ADDR"] == "0.0.0.0"
    assert api["environment"]["DRIFTLINE_API_TOKEN"].startswith("${DRIFTLINE_API_TOKEN:?")
    assert document["services"]["serve"]["command"][:2] == ["driftline", "serve"]
    for volume in document["services"]["grafana"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).is_dir(), volume
    datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/driftline.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/driftline.json").read_text())
    used = {p["datasource"]["uid"] for p in dashboard["panels"]}
    assert used == uids == {"driftline-clickhouse", "driftline-prometheus"}
