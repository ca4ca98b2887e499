"""Habits of the product code that a reader relies on: a function fits a screen, and comments
state rules, not figures that go stale (measurements live in docs/benchmarks.md, history in
git)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("gateway", "hotpath", "limits", "ledger")
FUNCTION_LINES_MAX = 60


def product_files(*suffixes: str) -> list[Path]:
    return [path for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*"))
            if path.suffix in suffixes and "pb" not in path.relative_to(ROOT).parts]


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in product_files(".py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES_MAX:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines}")
    assert long == []


def test_comments_cite_no_issue_numbers_or_timings():
    stale = re.compile(r"\bissue \d|\d\s*(?:µs|us|ns)\b|instructions per")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in product_files(".py", ".pyx", ".lua")
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if stale.search(line)]
    assert found == []
