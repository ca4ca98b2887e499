"""The text of the public contract (proto/creditgate/v1/creditgate.proto) says what the code
does, so it cannot drift: every bound of limits/constants.py it names is stated beside the
name with its current value ("256 (AUTHORIZE_BATCH_SIZE_MAX)"), it names no bound that does
not exist, and its lists of ISO 8583 response codes are those limits/reasons.py answers with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from creditgate.limits import constants
from creditgate.limits.reasons import PARTIAL_APPROVAL_CODE, RESPONSE_CODE, DeclineReason

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto" / "creditgate" / "v1" / "creditgate.proto"
TEXT = PROTO.read_text()

UPPER_NAME = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")
BOUNDS = {name: value for name, value in vars(constants).items()
          if UPPER_NAME.fullmatch(name) and isinstance(value, (int, float, str))
          and not isinstance(value, bool)}
# A name spelled like a bound (limits/constants.py puts the unit or kind last).
BOUND_LIKE = re.compile(r"_(?:MAX|MIN|DEFAULT|S|MS|BPS|LENGTH|YEARS)$")
# The bounds the issue asked the contract to state; the check below is not vacuous.
REQUIRED_BOUNDS = ("AUTHORIZE_BATCH_SIZE_MAX", "CAP_MINOR_MAX")


def spellings(value: int | float | str) -> list[str]:
    """How the contract may write a bound's value, the preferred first: an integer with
    thousands commas (10,000,000,000,000) or plain, a string in double quotes."""
    if isinstance(value, str):
        return [f'"{value}"']
    if isinstance(value, int):
        return [f"{value:,}", str(value)]
    return [repr(value)]


def mentions() -> dict[str, list[int]]:
    """Every constant name in the contract, with the offsets where it appears."""
    found: dict[str, list[int]] = {}
    for match in UPPER_NAME.finditer(TEXT):
        if match.group() in BOUNDS:
            found.setdefault(match.group(), []).append(match.start())
    return found


def line_of(offset: int) -> str:
    start = TEXT.rfind("\n", 0, offset) + 1
    end = TEXT.find("\n", offset)
    return f"line {TEXT.count(chr(10), 0, offset) + 1}: {TEXT[start:end].strip()}"


def test_the_contract_names_the_bounds_it_refers_to():
    assert set(REQUIRED_BOUNDS) <= set(mentions())


@pytest.mark.parametrize("name", sorted(set(mentions()) | set(REQUIRED_BOUNDS)))
def test_every_named_bound_is_stated_with_its_current_value(name):
    value = BOUNDS[name]
    stated = [re.compile(rf"(?<![\w,]){re.escape(spelling)} \($") for spelling in
              spellings(value)]
    offsets = mentions().get(name, [])
    assert offsets, f"{name} is not mentioned"
    for offset in offsets:
        before, after = TEXT[:offset], TEXT[offset + len(name):]
        assert any(p.search(before) for p in stated) and after.startswith(")"), (
            f"{name} must be written as \"{spellings(value)[0]} ({name})\" "
            f"({line_of(offset)})")


def test_the_contract_names_no_bound_that_does_not_exist():
    unknown = {match.group(): match.start() for match in UPPER_NAME.finditer(TEXT)
               if BOUND_LIKE.search(match.group()) and match.group() not in BOUNDS}
    assert not unknown, "names a bound limits/constants.py lacks: " + "; ".join(
        f"{name} ({line_of(offset)})" for name, offset in unknown.items())


def _block(kind: str, name: str) -> list[str]:
    """The lines of `message name { ... }` (or an enum), without the braces' lines."""
    lines = TEXT.splitlines()
    start = lines.index(f"{kind} {name} {{")
    end = lines.index("}", start)
    return lines[start + 1:end]


def _comment(lines: list[str], declaration: re.Pattern) -> str:
    """The comment of one declaration: the // lines right above it and the one after it."""
    index = next(i for i, line in enumerate(lines) if declaration.search(line))
    above = []
    for line in reversed(lines[:index]):
        if not line.strip().startswith("//"):
            break
        above.insert(0, line.strip().removeprefix("//"))
    _, _, trailing = lines[index].partition("//")
    return " ".join([*above, trailing])


def test_the_response_code_list_is_complete():
    comment = _comment(_block("message", "AuthorizeResponse"),
                       re.compile(r"^\s*string response_code = 3;"))
    listed = re.findall(r'"(\d\d)"', comment)
    answered = set(RESPONSE_CODE.values()) | {PARTIAL_APPROVAL_CODE}
    assert len(listed) == len(set(listed)), f"a code is listed twice: {listed}"
    assert set(listed) == answered, (f"missing {sorted(answered - set(listed))}, "
                                     f"not answered {sorted(set(listed) - answered)}")


@pytest.mark.parametrize("reason", list(DeclineReason), ids=lambda r: r.name)
def test_each_decline_reason_states_its_response_code(reason):
    name = "DECLINE_REASON_" + ("UNSPECIFIED" if reason == DeclineReason.NONE else reason.name)
    comment = _comment(_block("enum", "DeclineReason"), re.compile(rf"^\s*{name} = \d+;"))
    found = re.search(r"response code (\d\d)\b", comment)
    assert found, f"{name}: no response code in its comment {comment!r}"
    assert found.group(1) == RESPONSE_CODE[reason], (
        f"{name}: the comment says {found.group(1)}, the code answers {RESPONSE_CODE[reason]}")
