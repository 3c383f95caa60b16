"""The examples in every driftline module's docstrings, run under the modules' real (installed) names.

pytest's ``--doctest-modules`` would import ``streams/pipeline/windows.py`` as a top-level ``streams.windows``, a
second copy beside ``driftline.streams.pipeline.windows`` (and a second set of Prometheus metrics); this imports
each module by its package name instead.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import driftline

PACKAGES = ("driftline.detectors", "driftline.schemas", "driftline.serving", "driftline.streams")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [m.name for m in pkgutil.walk_packages(path, f"{package}.") if not m.name.endswith("__main__")]
    return sorted(names)


def _examples(name: str) -> list[doctest.DocTest]:
    return [t for t in doctest.DocTestFinder().find(importlib.import_module(name), name) if t.examples]


MODULES = _modules()
WITH_EXAMPLES = [name for name in MODULES if _examples(name)]


def test_every_module_is_walked():
    assert driftline.__name__ == "driftline"
    assert {"driftline.streams.pipeline.windows", "driftline.detectors.summaries",
            "driftline.serving.monitor"} <= set(MODULES)
    assert len(WITH_EXAMPLES) >= 20


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name: str):
    tests = _examples(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
