"""Everything creditgate ships is importable under `creditgate.` only: the bare names of its
folders (`limits`, `ledger`, ...) belong to other distributions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("gateway", "hotpath", "limits", "ledger")


def test_every_module_imports_under_creditgate_and_no_bare_name_is_loaded(tmp_path):
    # Run from an empty folder, so the checkout's folders are not on sys.path by accident.
    modules = [
        f"creditgate.{folder}." + ".".join(path.relative_to(ROOT / folder).with_suffix("").parts)
        for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FOLDERS!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_source_imports_a_bare_folder_name():
    offenders = []
    for folder in (*FOLDERS, "bench", "tests", "proto", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py*")):
            if path.suffix not in (".py", ".pyx"):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                words = line.split()
                if len(words) >= 2 and words[0] in ("import", "from") and \
                        words[1].split(".")[0] in FOLDERS:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
