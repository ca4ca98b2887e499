"""Fixtures that run every hot-path case against both twins: hotpath._plan_py (the
specification) and its compiled twin hotpath._plan_c.

The compiled twin is skipped when it is not built, but a test fails when it was expected
(CREDITGATE_EXPECT_EXTENSIONS=1) or when its shared object sits in the source tree and still
does not import: a build that silently falls back to Python is a bug, not a skip.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

from creditgate.hotpath import _plan_py
from creditgate.limits import catalog as limits_catalog

REPO_ROOT = Path(__file__).resolve().parents[2]


def extension_built() -> bool:
    hotpath_dir = REPO_ROOT / "hotpath"
    return any(hotpath_dir.glob("_plan_c*.so")) or any(hotpath_dir.glob("_plan_c*.pyd"))


def extension_expected() -> bool:
    return os.environ.get("CREDITGATE_EXPECT_EXTENSIONS") == "1" or extension_built()


@pytest.fixture(scope="session")
def plan_c() -> ModuleType:
    """The compiled twin; skips the test if it is not built and not expected."""
    try:
        return importlib.import_module("creditgate.hotpath._plan_c")
    except ImportError as error:
        if extension_expected():
            pytest.fail(f"hotpath._plan_c is built or expected but does not import: {error}")
        pytest.skip(f"hotpath._plan_c is not built ({error})")


@pytest.fixture(params=["py", "c"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "py":
        return _plan_py
    return request.getfixturevalue("plan_c")


@pytest.fixture(scope="session")
def catalog() -> dict[str, limits_catalog.Product]:
    return limits_catalog.load()


@pytest.fixture
def rules(impl: ModuleType, catalog: dict[str, limits_catalog.Product]) -> dict:
    return impl.compile_products(catalog)
