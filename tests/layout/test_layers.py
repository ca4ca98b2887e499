"""The layers hold: no import cycles between creditgate's modules, production code never
imports the scripts' model, one function maps a customer to its partition, and the gateway
speaks the protocol without reaching into Redis itself."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("gateway", "hotpath", "limits", "ledger")


def modules() -> dict[str, Path]:
    found = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "pb" in path.relative_to(ROOT).parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found["creditgate." + ".".join(parts)] = path
    pyx = ROOT / "hotpath" / "_plan_c.pyx"
    found["creditgate.hotpath._plan_c"] = pyx
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The creditgate modules a file imports (`from creditgate.x import y` counts y when y is a
    module), at module level or inside functions alike."""
    text = path.read_text()
    if path.suffix == ".pyx":  # only its Python-level imports matter here
        text = "\n".join(_import_statements(text))
    names = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("creditgate"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in known else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names
                         if alias.name.startswith("creditgate"))
    return {name for name in names if name in known}


def _import_statements(text: str) -> list[str]:
    """The `from creditgate ...` and `import creditgate ...` statements of a Cython file,
    parenthesised continuation lines included."""
    statements, open_ = [], 0
    for line in text.splitlines():
        if open_ or line.startswith(("from creditgate", "import creditgate")):
            statements.append(line)
            open_ += line.count("(") - line.count(")")
    return statements


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) - {name} for name, path in found.items()}


def test_no_import_cycles():
    edges = graph()
    # A package's __init__ re-exporting its own modules is not a cycle between layers.
    for name in edges:
        edges[name] = {other for other in edges[name] if not name.startswith(other + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(edges[name]):
            if state.get(other) == 1:
                cycles.append(path[path.index(other):] + [other] if other in path
                              else [name, other])
            elif other not in state:
                visit(other, [*path, other])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_production_code_never_imports_the_model():
    edges = graph()
    assert [name for name, targets in edges.items()
            if "creditgate.limits.model" in targets and name != "creditgate.limits.model"] == []


def test_gateway_reaches_redis_only_through_the_limits_layer():
    # The server builds the Redis client it hands to the limits layer; errors maps Redis'
    # exceptions to statuses. No other gateway module talks to Redis.
    allowed = {"server.py", "errors.py"}
    offenders = [path.name for path in sorted((ROOT / "gateway").glob("*.py"))
                 if path.name not in allowed and "import redis" in path.read_text()
                 or path.name not in allowed and "from redis" in path.read_text()]
    assert offenders == []


def test_one_function_maps_a_customer_to_its_partition():
    spelled = [str(path.relative_to(ROOT)) for folder in (*FOLDERS, "bench")
               for path in sorted((ROOT / folder).rglob("*.py*"))
               if path.suffix in (".py", ".pyx") and "crc32" in path.read_text()]
    assert spelled == ["limits/keys.py"]
