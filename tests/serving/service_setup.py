"""What the service tests share: one trained registry per test process, copied into each test's state directory,
and rollback CloudEvents made by driftline's own event builder."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from driftline.serving.service.app import DEFAULT_MODEL_ID
from driftline.serving.service.registry import Registry, bootstrap
from driftline.streams.actions.decisions import ActionRequest, Breach
from driftline.streams.actions.events import cloud_event

MODEL = DEFAULT_MODEL_ID
FINGERPRINT = "0123456789abcdef0123456789abcdef"
T0 = 1_767_225_600_000


@cache
def _trained() -> Path:
    """Versions 1 and 2, trained once per test process (training takes seconds)."""
    root = Path(tempfile.mkdtemp(prefix="driftline-registry-"))
    atexit.register(shutil.rmtree, root, True)
    bootstrap(Registry(root, MODEL))
    return root


def home_with_registry(home: Path) -> Path:
    """``home`` holding a copy of the trained registry (as ``driftline serve`` leaves it after its first start)."""
    shutil.copytree(_trained(), home / "registry", dirs_exist_ok=True)
    return home


def rollback_event(to_version: str, from_version: str = "2", window: int = 5, model_id: str = MODEL) -> dict:
    """The rollback CloudEvent the policy engine would publish; its id depends on ``window``."""
    breach = Breach("slice_accuracy", "", "region=south", 0.05, 0.9, 1e-9, 400, T0 + window * 60_000,
                    T0 + (window + 1) * 60_000, "labels", 400)
    request = ActionRequest("rollback", f"rollback-{FINGERPRINT}-{T0 + window * 60_000}", FINGERPRINT,
                            f"{FINGERPRINT}-{T0}", model_id, from_version, "performance", "critical", (breach,),
                            T0 + window * 60_000, T0 + (window + 1) * 60_000, T0 + (window + 1) * 60_000,
                            "auto-ref", "cfg", to_version)
    return cloud_event(request)
