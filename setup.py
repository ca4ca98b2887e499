"""Build the Cython extension creditgate.hotpath._plan_c; all other metadata is in pyproject.toml.

CREDITGATE_NO_EXTENSIONS=1 builds no extension: hotpath then uses its pure-Python twin.
"""

from __future__ import annotations

import os
import pathlib

from setuptools import Extension, setup

HERE = pathlib.Path(__file__).resolve().parent
PLAN_PYX = "hotpath/_plan_c.pyx"


def extensions() -> list[Extension]:
    if os.environ.get("CREDITGATE_NO_EXTENSIONS") == "1":
        return []
    if not (HERE / PLAN_PYX).is_file():
        raise SystemExit(
            f"setup.py: {PLAN_PYX} is missing; set CREDITGATE_NO_EXTENSIONS=1 to build without it"
        )
    from Cython.Build import cythonize

    extension = Extension(
        "creditgate.hotpath._plan_c",
        sources=[PLAN_PYX],
        # Appended after Python's own CFLAGS, so this optimisation level is the one in effect.
        extra_compile_args=["-O2"],
    )
    return cythonize(
        [extension],
        compiler_directives={"language_level": 3, "binding": False},
    )


setup(ext_modules=extensions())
