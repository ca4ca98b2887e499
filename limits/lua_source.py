"""The Lua scripts as Redis runs them: one Redis Functions library (keys.LIBRARY, named by the
layout version) holding the prelude (limits/lua/_lib.lua) once and each file of limits/lua/
as a function `<name>_v<version>`, with every shared constant and each script's own contract
(limits/contracts.py: KEY_*, ARG_*) written as its value. Loaded once with FUNCTION LOAD and
called with FCALL; limits/transport.py sends the calls. `script_source` gives one script as a
plain EVAL script (the ledger worker's dead_letter, and the tests' probes of the helpers).
"""

from __future__ import annotations

import functools
import importlib.resources
import re

from creditgate.limits import constants, contracts, keys
from creditgate.limits.reasons import PRODUCT_RULE_REASON_MAX, DeclineReason, ScriptError

# The scripts the gateway's runner loads (dead_letter is the ledger worker's own).
SCRIPT_NAMES = tuple(name for name, script in contracts.SCRIPTS.items() if script.clock)
# Read-only twins of scripts: the same body with SHADOW true, registered with the flag
# no-writes (Redis refuses any write they attempt) and called with FCALL_RO. The gateway's
# shadow catalog (gateway/shadow.py) evaluates a candidate catalog with shadow_reserve; the
# KEYS, ARGV and reply are reserve's (a SKIP|<why> reply where the shadow cannot decide).
SHADOW_SCRIPTS = {"shadow_reserve": "reserve"}
SHADOW_SKIP = "SKIP|"


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
        "PRODUCT_RULES_KEPT_MAX": constants.PRODUCT_RULES_KEPT_MAX,
        "EFFECTIVE_MS_MAX": constants.EFFECTIVE_MS_MAX,
        "PRODUCT_RULE_REASON_MAX": PRODUCT_RULE_REASON_MAX,
    }
    values.update((name, str(value)) for name, value in bounds.items())
    # The fields of reserve's product rules (contracts.PRODUCT_RULES) by their Lua index.
    values.update((f"RULE_{name.upper()}", str(index + 1))
                  for index, name in enumerate(contracts.PRODUCT_RULES.names))
    values["RULE_FIELDS"] = str(len(contracts.PRODUCT_RULES))
    values["CUSTOMER_LAYOUT"] = _lua_string(str(keys.CUSTOMER_LAYOUT))
    values["RULES_SEPARATOR"] = _lua_string(contracts.RULES_SEPARATOR)
    values["NODES_SEPARATOR"] = _lua_string(contracts.NODES_SEPARATOR)
    values["HOURS_SEPARATOR"] = _lua_string(contracts.HOURS_SEPARATOR)
    # A script body runs live (SHADOW false: each guard is one jump) unless registered as its
    # shadow (library_source).
    values["SHADOW"] = "false"
    values["SHADOW_SKIP"] = _lua_string(SHADOW_SKIP)
    values["REPLAY_NONE"] = _lua_string(contracts.REPLAY_NONE)
    return values


def _lua_string(value: str) -> str:
    assert all(c.isalnum() or c in ":_|.#=^ ,;@" for c in value), value
    return f"'{value}'"


def _read(name: str) -> str:
    return importlib.resources.files("creditgate.limits").joinpath("lua").joinpath(name).read_text()


class LoadedScript:
    """A script of the library: its name, the function FCALL names, the library's source, and
    the command that calls it (FCALL_RO for a read-only shadow)."""

    __slots__ = ("name", "function", "source", "command")

    def __init__(self, name: str, function: str, source: str, command: str = "FCALL"):
        self.name = name
        self.function = function
        self.source = source
        self.command = command


def function_name(name: str, version: int = keys.LAYOUT_VERSION) -> str:
    return f"{name}_v{version}"


# A script's source (script_source, for EVAL) is its prelude (limits/lua/_lib.lua) and its own
# file, with two changes measured in redis-server by bench/script_cost.py (docs/benchmarks.md):
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


def library_source(bodies: dict[str, str] | None = None, library: str = keys.LIBRARY,
                   suffix: str = f"_v{keys.LAYOUT_VERSION}") -> str:
    """The library FUNCTION LOAD takes: the prelude once (its helpers are built when the
    library loads, not per call), then each script's body as a function registered as
    `<name><suffix>` (`bodies`: other texts in place of the files, for bench/script_cost.py's
    cuts). Locals of the library (the prelude's memo tables) live as long as the library."""
    head, functions = _split_library(_read("_lib.lua"))
    if bodies is None:
        bodies = {name: _read(f"{name}.lua") for name in SCRIPT_NAMES}
    used: set[str] = set()
    for body in bodies.values():
        used |= _used_functions(body, functions)
    assert _GLOBALS_LINES in head, "_lib.lua's head no longer takes the globals it uses"
    head = head.replace(_GLOBALS_LINES, _LIBRARY_GLOBALS)
    prelude = head + "".join(text for helper, text in functions.items() if helper in used)
    constants = lua_constant_values()
    parts = [f"#!lua name={library}\n-- generated from limits/lua/ by limits/lua_source.py\n",
             _inline_constants(prelude, constants)]
    for name, body in bodies.items():
        values = {**constants, **contracts.SCRIPTS[name].lua_constants()}
        parts.append(
            f"\n-- {name}.lua\nlocal function {name}_script(KEYS, ARGV)\n"
            f"{_inline_constants(body, values)}\nend\n")
        if name in contracts.READ_ONLY:  # Redis refuses any write it attempts
            parts.append(
                f"loading_redis.register_function{{function_name='{name}{suffix}',\n"
                f"  flags={{'no-writes'}}, callback=function(KEYS, ARGV)\n"
                f"  if not string then {_GLOBAL_NAMES} = standard_globals() end\n"
                f"  return {name}_script(KEYS, ARGV)\nend}}\n")
            continue
        parts.append(
            f"loading_redis.register_function('{name}{suffix}', function(KEYS, ARGV)\n"
            f"  if not string then {_GLOBAL_NAMES} = standard_globals() end\n"
            f"  return {name}_script(KEYS, ARGV)\nend)\n")
    for shadow, name in SHADOW_SCRIPTS.items():
        if name not in bodies:
            continue
        values = {**constants, **contracts.SCRIPTS[name].lua_constants(), "SHADOW": "true"}
        parts.append(
            f"\n-- {name}.lua as its read-only shadow\n"
            f"local function {shadow}_script(KEYS, ARGV)\n"
            f"{_inline_constants(bodies[name], values)}\nend\n"
            f"loading_redis.register_function{{function_name='{shadow}{suffix}',\n"
            f"  flags={{'no-writes'}}, callback=function(KEYS, ARGV)\n"
            f"  if not string then {_GLOBAL_NAMES} = standard_globals() end\n"
            f"  return {shadow}_script(KEYS, ARGV)\nend}}\n")
    return "".join(parts)


# The prelude takes the globals it uses into locals (a global read is a metamethod call per
# read). While a library loads, its code reaches only a `redis` that can register functions:
# the library declares the locals, and each function sets them on its first call.
_GLOBALS_LINES = ("local redis, math, string, table = redis, math, string, table\n"
                  "local tonumber, ipairs, unpack = tonumber, ipairs, unpack\n")
_GLOBAL_NAMES = "redis, math, string, table, tonumber, ipairs, unpack"
_LIBRARY_GLOBALS = (f"local function standard_globals()\n  return {_GLOBAL_NAMES}\nend\n"
                    f"local loading_redis = redis\nlocal {_GLOBAL_NAMES}\n")


@functools.cache
def library() -> str:
    return library_source()


@functools.cache
def scripts() -> dict[str, LoadedScript]:
    loaded = {name: LoadedScript(name, function_name(name), library(),
                                 "FCALL_RO" if name in contracts.READ_ONLY else "FCALL")
              for name in SCRIPT_NAMES}
    loaded.update((shadow, LoadedScript(shadow, function_name(shadow), library(), "FCALL_RO"))
                  for shadow in SHADOW_SCRIPTS)
    return loaded
