"""Import every module of the package: catches modules that import names that do not exist."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import sftdpo


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(sftdpo.__path__, prefix="sftdpo."))


MODULES = _modules()


def test_walk_finds_the_package() -> None:
    expected = {"sftdpo.cli", "sftdpo.backbone", "sftdpo.models", "sftdpo.losses", "sftdpo.batching",
                "sftdpo.evaluate", "sftdpo.tasks.paraphrase", "sftdpo.tasks.sonnet", "sftdpo.data.quora"}
    assert expected <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__name__ == name
