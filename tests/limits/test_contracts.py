"""Every Lua script's header says what limits/contracts.py declares, name for name, and its
code reaches KEYS and ARGV only through the declared names: a drift fails here."""

from __future__ import annotations

import re

import pytest

from creditgate.limits import contracts
from creditgate.limits.lua_source import _read, script_source

KEYS_LINE = re.compile(r"^-- KEYS\[(\d+)\] (\w+)")
ARGV_LINE = re.compile(r"^-- ARGV\[(\d+)(\.\.)?\] (\w+)")


def header(name: str) -> list[str]:
    lines = []
    for line in _read(f"{name}.lua").splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return lines


def declared_args(script: contracts.Script) -> list[tuple[int, bool, str]]:
    args = [(index + 1, False, name) for index, name in enumerate(script.header)]
    args += [(index + script.first_arg, False, name)
             for index, name in enumerate(script.args.names)]
    if script.args.rest:
        args.append((len(script.args) + script.first_arg, True, script.args.rest[0]))
    return args


@pytest.mark.parametrize("name", sorted(contracts.SCRIPTS))
def test_header_names_keys_and_argv_as_declared(name):
    script = contracts.SCRIPTS[name]
    lines = header(name)
    keys = [(int(m[1]), m[2]) for line in lines if (m := KEYS_LINE.match(line))]
    assert keys == [(index + 1, key) for index, key in enumerate(script.keys.names)]
    args = [(int(m[1]), bool(m[2]), m[3]) for line in lines if (m := ARGV_LINE.match(line))]
    assert args == declared_args(script)


@pytest.mark.parametrize("name", sorted(contracts.SCRIPTS))
def test_header_states_the_declared_reply(name):
    replies = [line for line in header(name) if line.startswith("-- Reply: ")]
    assert len(replies) == 1, f"{name}.lua: one `-- Reply:` line expected"
    assert replies[0].removeprefix("-- Reply: ").startswith(
        contracts.SCRIPTS[name].reply_text())


@pytest.mark.parametrize("name", sorted(contracts.SCRIPTS))
def test_code_reaches_keys_and_argv_by_name_only(name):
    code = "\n".join(line.split("--")[0] for line in _read(f"{name}.lua").splitlines())
    assert re.findall(r"\b(?:KEYS|ARGV)\[\s*\d", code) == []
    assert re.findall(r"unpack\(ARGV,\s*\d", code) == []
    # Every KEY_/ARG_ name the code uses is declared: assembly leaves none unreplaced.
    assembled = script_source(name)
    assert re.findall(r"\b(?:KEY|ARG)_[A-Z0-9_]+\b", assembled) == []


def test_layout_positions_follow_wire_order():
    reserve = contracts.RESERVE
    assert reserve.args.base == 0 and reserve.args.amount_minor == 3
    assert reserve.lua_constants()["ARG_DEADLINE_MS"] == "2"
    assert reserve.lua_constants()["ARG_MERCHANT_SCOPE"] == "4"
    assert reserve.lua_constants()["ARG_AMOUNT_MINOR"] == "8"
    assert reserve.lua_constants()["ARG_RULES"] == str(len(reserve.args) + 4)
    assert contracts.FORCE_CAPTURE.lua_constants()["ARG_NODES"] == str(
        len(contracts.FORCE_CAPTURE.args) + 5)
    fields = contracts.REPAY.reply.bind(["10", "0", "5", "1700", "total", "10"])
    assert (fields.repaid_minor, fields.decided_at_ms, fields.rest) == \
        ("10", "1700", [("total", "10")])
    fields = contracts.INCREMENT.reply.bind(list("rlhadxpqcon") + ["9"])
    assert (fields.reason, fields.plan, fields.rest, fields.hold_held_minor) == \
        ("r", "n", [], "9")
    with pytest.raises(AttributeError, match="no field 'amount'"):
        _ = reserve.args.amount


def test_pack_builds_wire_order_from_names_and_refuses_a_missing_or_unknown_name():
    refund = contracts.REFUND.args
    assert refund.pack(hold_id="h", amount_minor="5", base="b", fingerprint="f") == \
        ["b", "h", "f", "5"]
    assert contracts.REPAY.args.pack(base="b", customer_id="c", fingerprint="f",
                                     amount_minor="5", rest=["total"]) == \
        ["b", "c", "f", "5", "total"]
    with pytest.raises(TypeError, match=r"missing \['fingerprint'\], unknown \['finger'\]"):
        refund.pack(hold_id="h", amount_minor="5", base="b", finger="f")
    with pytest.raises(TypeError, match="no repeated tail"):
        refund.pack(hold_id="h", amount_minor="5", base="b", fingerprint="f", rest=["x"])


@pytest.mark.parametrize(("layout", "values"), [
    (contracts.SET_RAISE.reply, ["1", "2", "3", "4", "5", "6"]),  # one too many, no tail
    (contracts.SET_RAISE.reply, ["1", "2", "3", "4"]),  # one too few
    (contracts.AUTHORIZATION, list("rlhadxpqcon") + ["node", "1", "2"]),  # a level cut short
    (contracts.INCREMENT.reply, list("rlhadxpqco")),  # no room for the tail
])
def test_bind_refuses_values_that_do_not_fit(layout, values):
    with pytest.raises(ValueError, match="do not fit the layout"):
        layout.bind(values)
