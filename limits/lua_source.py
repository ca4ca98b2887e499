"""The Lua scripts as Redis runs them: each file of limits/lua/ after the prelude helpers it
calls (limits/lua/_lib.lua), with every shared constant and the script's own contract
(limits/contracts.py: KEY_*, ARG_*) written as its value. Loaded once with SCRIPT LOAD and
called by SHA; limits/transport.py sends the calls.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import re

from creditgate.limits import constants, contracts, keys
from creditgate.limits.reasons import DeclineReason, ScriptError

# The scripts the gateway's runner loads (dead_letter is the ledger worker's own).
SCRIPT_NAMES = tuple(name for name, script in contracts.SCRIPTS.items() if script.clock)


def lua_constant_values() -> dict[str, str]:
    """Every constant the scripts share with Python, as the Lua literal of its value."""
    values = {name: _lua_string(value) for name, value in keys.LUA_CONSTANTS.items()}
    values.update((f"R_{reason.name}", str(int(reason))) for reason in DeclineReason if reason)
    values.update((f"E_{error.name}", str(int(error))) for error in ScriptError)
    bounds = {
        "AMOUNT_MINOR_MAX": constants.AMOUNT_MINOR_MAX,
        "HOLD_TOKEN_LENGTH": constants.HOLD_TOKEN_LENGTH,
        "PREFIX_LENGTH": len(keys.PREFIX),
        "CAP_MINOR_MAX": constants.CAP_MINOR_MAX,
        "VELOCITY_AMOUNT_MINOR_MAX": constants.VELOCITY_AMOUNT_MINOR_MAX,
        "HOLD_TTL_MS_MAX": constants.HOLD_TTL_S_MAX * 1000,
        "CLOSED_HOLD_RETENTION_MS": constants.CLOSED_HOLD_RETENTION_S * 1000,
        "IDEMPOTENCY_TTL_S": constants.IDEMPOTENCY_TTL_S,
        "EXPIRE_PER_CALL_MAX": constants.EXPIRE_PER_CALL_MAX,
        "REPAY_PATHS_MAX": constants.REPAY_PATHS_MAX,
        "CAPTURE_TOLERANCE_BPS_MAX": constants.CAPTURE_TOLERANCE_BPS_MAX,
        "INSTALLMENT_MONTHS_MAX": constants.INSTALLMENT_MONTHS_MAX,
        "INSTALLMENT_FEE_BPS_MAX": constants.INSTALLMENT_FEE_BPS_MAX,
        "RAISE_DURATION_MS_MAX": constants.RAISE_DURATION_S_MAX * 1000,
        "SWEEP_CUSTOMERS_PER_PARTITION_MAX": constants.SWEEP_CUSTOMERS_PER_PARTITION_MAX,
    }
    values.update((name, str(value)) for name, value in bounds.items())
    return values


def _lua_string(value: str) -> str:
    assert all(c.isalnum() or c in ":_|.#=^ " for c in value), value
    return f"'{value}'"


def _read(name: str) -> str:
    return importlib.resources.files("creditgate.limits").joinpath("lua").joinpath(name).read_text()


class LoadedScript:
    """A script's source as Redis runs it, and its SHA-1 (what EVALSHA names)."""

    __slots__ = ("name", "source", "sha")

    def __init__(self, name: str, source: str):
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


# A script's source is its prelude (limits/lua/_lib.lua) and its own file, with two changes
# measured in redis-server by bench/script_cost.py (docs/benchmarks.md):
# - every shared constant is written as its literal value, not as a `local` of the prelude:
#   a prelude function that reads a local captures it as an upvalue each time the script runs
#   (Redis runs the whole chunk per call);
# - a script's prelude keeps only the helper functions it calls, directly or through another
#   helper: each `local function` is a closure built on every call.
_FUNCTION_START = re.compile(r"^local function (\w+)\(", re.MULTILINE)


def _split_library(source: str) -> tuple[str, dict[str, str]]:
    """_lib.lua as (its head, {function name: its text}); a function's text runs to the next
    `local function` line, so the comments above a function belong to the one before it."""
    starts = list(_FUNCTION_START.finditer(source))
    head = source[:starts[0].start()]
    functions = {}
    for match, following in zip(starts, [*starts[1:], None], strict=True):
        end = following.start() if following else len(source)
        functions[match.group(1)] = source[match.start():end]
    return head, functions


def _used_functions(code: str, functions: dict[str, str]) -> set[str]:
    """The helpers `code` names outside comments (a call, or a helper passed as a value), and
    the helpers they name, transitively. A name too many costs one closure; one too few would
    fail only on the path that calls it."""
    used: set[str] = set()
    pending = [code]
    while pending:
        text = "\n".join(line.split("--")[0] for line in pending.pop().splitlines())
        for name, body in functions.items():
            if name not in used and re.search(rf"(?<![.:'\"])\b{name}\b(?!['\"])", text):
                used.add(name)
                pending.append(body)
    return used


def _inline_constants(code: str, values: dict[str, str]) -> str:
    pattern = re.compile(r"\b(" + "|".join(sorted(values, key=len, reverse=True)) + r")\b")
    return pattern.sub(lambda match: values[match.group(1)], code)


def script_source(name: str, body: str | None = None) -> str:
    """The source Redis runs for one script (`body`: another text in place of its file, for
    tests that probe the prelude's helpers)."""
    head, functions = _split_library(_read("_lib.lua"))
    if body is None:
        body = _read(f"{name}.lua")
    used = _used_functions(body, functions)
    prelude = head + "".join(text for helper, text in functions.items() if helper in used)
    contract = contracts.SCRIPTS.get(name)  # a probe of the prelude's helpers has none
    values = {**lua_constant_values(), **(contract.lua_constants() if contract else {})}
    return _inline_constants(f"-- generated from limits/lua/_lib.lua and {name}.lua by "
                             f"limits/lua_source.py\n{prelude}{body}", values)


@functools.cache
def scripts() -> dict[str, LoadedScript]:
    return {name: LoadedScript(name, script_source(name)) for name in SCRIPT_NAMES}
