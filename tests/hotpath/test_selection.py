"""hotpath/__init__.py serves the compiled twin unless CREDITGATE_NO_EXTENSIONS=1 or it fails to
import; a built extension that does not load fails here instead of silently running slower."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from creditgate import hotpath
from creditgate.hotpath import _plan_py

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT_S = 60


def extension_built() -> bool:
    hotpath_dir = REPO_ROOT / "hotpath"
    return any(hotpath_dir.glob("_plan_c*.so")) or any(hotpath_dir.glob("_plan_c*.pyd"))


def run_python(code: str, **environment: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name, value in environment.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=True,
    )


def test_this_process_serves_the_expected_twin():
    if os.environ.get("CREDITGATE_NO_EXTENSIONS") == "1":
        assert hotpath.EXTENSION_LOADED is False
        assert hotpath.implementation is _plan_py
    elif extension_built() or os.environ.get("CREDITGATE_EXPECT_EXTENSIONS") == "1":
        assert hotpath.EXTENSION_LOADED is True, "hotpath._plan_c is built but was not loaded"
        assert hotpath.implementation.__name__ == "creditgate.hotpath._plan_c"
    else:  # not in the tree, yet it may be installed elsewhere: either twin, said truthfully
        assert hotpath.EXTENSION_LOADED is (hotpath.implementation is not _plan_py)


def test_names_come_from_the_served_twin():
    for name in hotpath.NAMES:
        if name == "InvalidArgument":
            assert hotpath.InvalidArgument is _plan_py.InvalidArgument
        else:
            assert getattr(hotpath, name) is getattr(hotpath.implementation, name), name


def test_both_twins_define_every_name(plan_c):
    for name in hotpath.NAMES:
        assert hasattr(_plan_py, name), name
        assert hasattr(plan_c, name), name
    assert plan_c.InvalidArgument is _plan_py.InvalidArgument
    assert plan_c.CHANNEL_NAMES == _plan_py.CHANNEL_NAMES


def test_no_extensions_selects_the_python_twin():
    result = run_python(
        "from creditgate import hotpath; "
        "print(hotpath.EXTENSION_LOADED, hotpath.implementation.__name__)",
        CREDITGATE_NO_EXTENSIONS="1",
    )
    assert result.stdout.split() == ["False", "creditgate.hotpath._plan_py"]


def test_default_selects_the_compiled_twin_when_built():
    if not extension_built():
        pytest.skip("hotpath._plan_c is not built")
    result = run_python(
        "from creditgate import hotpath; "
        "print(hotpath.EXTENSION_LOADED, hotpath.implementation.__name__)",
        CREDITGATE_NO_EXTENSIONS=None,
    )
    assert result.stdout.split() == ["True", "creditgate.hotpath._plan_c"]


def test_failed_import_falls_back_and_says_so():
    # A None entry in sys.modules makes `from creditgate.hotpath import _plan_c` raise ImportError.
    result = run_python(
        "import logging, sys; logging.basicConfig(); "
        "sys.modules['creditgate.hotpath._plan_c'] = None; "
        "from creditgate import hotpath; "
        "print(hotpath.EXTENSION_LOADED, hotpath.implementation.__name__)",
        CREDITGATE_NO_EXTENSIONS=None,
    )
    assert result.stdout.split() == ["False", "creditgate.hotpath._plan_py"]
    assert "compiled extension not loaded" in result.stderr
