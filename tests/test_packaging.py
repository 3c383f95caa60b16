"""The wheel installs one import package, ``driftline``, that an app with its own ``schemas`` or ``serving``
cannot shadow; and every source package of the repository is in it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from tests.conftest import ROOT

FOLDERS = {"driftline": "driftline", "streams": "driftline.streams", "serving": "driftline.serving",
           "detectors": "driftline.detectors", "schemas": "driftline.schemas"}


def source_packages() -> set[str]:
    found = set()
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    return found


def test_every_source_package_is_declared():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert declared == source_packages()


def test_the_wheel_runs_beside_an_app_with_its_own_schemas_and_serving(tmp_path: Path):
    source = tmp_path / "source"  # a clean copy: building in place would leave a stale build/ behind
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("driftline-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"driftline", wheel.name.split("-")[0] + "-" +
                                                wheel.name.split("-")[1] + ".dist-info"}
    assert "driftline/schemas/prediction.v1.json" in names and "driftline/streams/kafka/broker/pom.xml" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # the wheel's dependencies come from the running environment; the wheel itself is installed on its own
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True)
    app = tmp_path / "app"
    (app / "serving").mkdir(parents=True)
    (app / "schemas.py").write_text("raise SystemExit('the app schemas module was imported')\n")
    (app / "serving" / "__init__.py").write_text("raise SystemExit('the app serving package was imported')\n")
    help_text = subprocess.run([str(venv / "bin" / "driftline"), "--help"], cwd=app, capture_output=True,
                               text=True, check=False)
    assert help_text.returncode == 0 and "worker" in help_text.stdout, help_text.stderr
    probe = ("import driftline, driftline.schemas as s; from driftline import Monitor; "
             "import driftline.streams.worker; print(s.load('prediction.v1')['title'], driftline.__file__)")
    ran = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=app, capture_output=True, text=True,
                         check=False)
    assert ran.returncode == 0, ran.stderr
    assert "prediction event v1" in ran.stdout and str(venv) in ran.stdout


def test_the_editable_install_runs_beside_an_app_with_its_own_schemas_and_serving(tmp_path: Path):
    """The suite runs on `pip install -e`: that install must not be shadowed by an app's modules either."""
    (tmp_path / "serving").mkdir()
    (tmp_path / "schemas.py").write_text("raise SystemExit('the app schemas module was imported')\n")
    (tmp_path / "serving" / "__init__.py").write_text("raise SystemExit('the app serving package was imported')\n")
    probe = ("import driftline.schemas as s; from driftline import Monitor; import driftline.streams.cli; "
             "print(s.load('label.v1')['title'], s.__file__)")
    ran = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    assert "label event v1" in ran.stdout and str(ROOT / "schemas") in ran.stdout

