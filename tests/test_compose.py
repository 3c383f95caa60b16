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
    assert {"kafka", "clickhouse", "worker-summarize", "worker-merge", "prometheus", "grafana"} <= set(
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
