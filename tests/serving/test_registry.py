"""The file-based model registry, the deployment switch and the rollback records it acts on (no broker).

Versions are immutable and written atomically; weights whose hash changed are refused; names read off Kafka
never reach outside the registry; a switch is acted on once per event id, only to a registered version, and
never rolls back a version that is not serving.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import torch

from driftline.serving.service import data
from driftline.serving.service.deployment import Deployment
from driftline.serving.service.metrics import ServiceMetrics
from driftline.serving.service.model import Classifier
from driftline.serving.service.registry import DeploymentState, Registry, RegistryError, UnknownVersion
from driftline.serving.service.rollback import MalformedRollback, handle_record, parse
from tests.serving.service_setup import MODEL, home_with_registry, rollback_event


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(home_with_registry(tmp_path) / "registry", MODEL)


def _deployment(registry: Registry) -> Deployment:
    return Deployment(registry, ServiceMetrics(lambda: None))


def test_the_first_start_registers_two_versions_with_hash_and_training_metadata(registry: Registry):
    assert registry.versions() == ["1", "2"]
    for version in ("1", "2"):
        meta = registry.metadata(version)
        assert meta["version"] == version and meta["model_id"] == MODEL
        assert meta["sha256"] == registry.load(version).sha256
        assert meta["dataset"]["generator"] == "river.datasets.synth.Agrawal" and meta["training"]["epochs"] > 0
    v1, v2 = (registry.metadata(v)["holdout"]["accuracy_by_region"] for v in ("1", "2"))
    assert min(v1.values()) > 0.95  # version 1 is good everywhere
    assert v2["north"] > 0.95 and v2["central"] > 0.95 and v2["south"] < 0.2  # version 2 fails one segment
    assert registry.metadata("2")["dataset"]["corrupted_segment"] == {"region": "south", "how": "labels inverted"}
    assert not [p for p in registry.path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_weights_that_changed_after_registration_are_refused(registry: Registry):
    weights = registry.path / "2" / "model.pt"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the middle of the tensors
    weights.write_bytes(bytes(raw))
    with pytest.raises(RegistryError, match="sha256"):
        registry.load("2")


def test_a_version_is_immutable_and_written_whole(registry: Registry, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(RegistryError, match="already registered"):
        registry.register("1", Classifier(), {})
    assert registry.register("1", Classifier(), {}, exist_ok=True)["sha256"] == registry.metadata("1")["sha256"]

    def disk_full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(RegistryError, match="No space left"):
        registry.register("3", Classifier(), {})
    assert registry.versions() == ["1", "2"] and not (registry.path / "3").exists()
    assert not [p for p in registry.path.iterdir() if p.name.startswith(".")]

    def killed_mid_write(_: object, path: Path) -> None:
        Path(path).write_bytes(b"half a tensor")
        raise KeyboardInterrupt  # the process dies here: nothing gets to clean up

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        registry.register("4", Classifier(), {})
    assert registry.versions() == ["1", "2"] and not (registry.path / "4").exists()  # only a staging dir is left


def test_new_versions_sort_numerically_and_carry_their_metadata(registry: Registry):
    registry.register("10", Classifier(), {"note": "retrained"})
    assert registry.versions() == ["1", "2", "10"]
    assert registry.metadata("10")["note"] == "retrained"
    assert isinstance(registry.load("10").model, Classifier)


@pytest.mark.parametrize("name", ["../1", "1/../2", ".tmp-1", "", "a" * 65, "v 1", "/etc"])
def test_names_that_are_not_plain_version_names_are_never_versions(registry: Registry, name: str):
    assert name not in registry
    with pytest.raises(UnknownVersion):
        registry.metadata(name)
    with pytest.raises(RegistryError):
        registry.register(name, Classifier(), {})


def test_the_deployment_state_round_trips_and_a_broken_file_is_ignored(registry: Registry):
    assert registry.read_state() is None
    registry.write_state(DeploymentState("2", ("a", "b")), "test")
    assert registry.read_state() == DeploymentState("2", ("a", "b"))
    assert json.loads((registry.path / "active.json").read_text())["reason"] == "test"
    (registry.path / "active.json").write_text("{not json")
    assert registry.read_state() is None
    assert _deployment(registry).active.version == "1"  # the first registered version, as on a first start


def test_a_saved_version_that_is_gone_falls_back_to_the_first(registry: Registry):
    registry.write_state(DeploymentState("9"), "test")
    assert _deployment(registry).active.version == "1"


def test_a_rollback_is_acted_on_once_per_event_id_and_only_to_a_registered_version(registry: Registry):
    registry.write_state(DeploymentState("2"), "promoted")
    deployment = _deployment(registry)
    first = orjson.dumps(rollback_event("1"))
    key = MODEL.encode()
    assert handle_record(deployment, key, first) == "applied"
    assert deployment.active.version == "1"
    deployment.switch("2", trigger="promote", reason="released again")  # a release pipeline's decision ...
    assert handle_record(deployment, key, first) == "duplicate"  # ... that a redelivered rollback never undoes
    assert deployment.active.version == "2"
    assert handle_record(deployment, key, orjson.dumps(rollback_event("7", window=6))) == "unknown_version"
    assert handle_record(deployment, key, orjson.dumps(rollback_event("../1", window=7))) == "unknown_version"
    # a rollback of version 3 while 2 serves is late: 2 was released after it was decided
    assert handle_record(deployment, key, orjson.dumps(rollback_event("1", "3", window=8))) == "stale"
    assert handle_record(deployment, key, orjson.dumps(rollback_event("2", window=9))) == "already_active"
    assert deployment.active.version == "2"
    metrics = deployment.metrics.registry
    assert metrics.get_sample_value("driftline_serving_version_switches_total", {"trigger": "rollback"}) == 1
    assert metrics.get_sample_value("driftline_serving_active_version", {"model_version": "2"}) == 1
    # the ids survive a restart: a redelivery after it is still recognised
    assert handle_record(_deployment(registry), key, first) == "duplicate"


def test_other_models_requests_are_skipped(registry: Registry):
    deployment = _deployment(registry)
    other = orjson.dumps(rollback_event("2", "1", model_id="churn"))
    assert handle_record(deployment, b"churn", other) == "other_model"
    assert handle_record(deployment, None, other) == "other_model"  # no key: the data's model_id decides
    assert handle_record(deployment, MODEL.encode(), other) == "other_model"  # the data's model_id decides
    assert handle_record(deployment, b"churn", b"not json") == "other_model"  # another model's: not even parsed
    assert deployment.active.version == "1"


@pytest.mark.parametrize(("value", "why"), [
    (b"not json", "not JSON"),
    (None, "not JSON"),
    (b"[1, 2]", "JSON object"),
    (orjson.dumps({**rollback_event("1"), "type": "io.driftline.retrain.requested"}), "type"),
    (orjson.dumps({**rollback_event("1"), "data": "1"}), "data"),
    (orjson.dumps({**rollback_event("1"), "id": ""}), "id"),
    (orjson.dumps({**rollback_event("1"), "id": 7}), "id"),
    (orjson.dumps({**rollback_event("1"), "data": {**rollback_event("1")["data"], "to_version": None}}),
     "data.to_version"),
    (orjson.dumps({**rollback_event("1"), "data": {**rollback_event("1")["data"], "from_version": 2}}),
     "data.from_version"),
    (orjson.dumps({k: v for k, v in rollback_event("1").items() if k != "data"}), "data"),
])
def test_a_malformed_record_is_named_and_skipped(registry: Registry, value: bytes | None, why: str):
    with pytest.raises(MalformedRollback, match=why):
        parse(value)
    deployment = _deployment(registry)
    assert handle_record(deployment, MODEL.encode(), value) == "malformed"
    assert deployment.active.version == "1"


def test_the_training_data_can_drift_and_lose_one_segment_s_labels():
    plain, shifted = data.draw(4000, seed=1), data.draw(4000, seed=1, shift=0.8)
    young = [sum(e.features["age"] < data.SHIFT_AGE for e in sample) / len(sample) for sample in (plain, shifted)]
    assert young[0] > 0.45 and young[1] < 0.2
    corrupted = data.corrupt_segment(plain, "south")
    assert all((c.label != e.label) == (e.region == "south") for c, e in zip(corrupted, plain, strict=True))
    with pytest.raises(ValueError, match="shift"):
        data.draw(1, seed=1, shift=1.5)
