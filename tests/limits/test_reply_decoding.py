"""Decoding the reserve and increment scripts' replies (limits/client.py): every field of the
documented layout, "OK|reason|level|hold id|available|now|expires|approved|partial|counter-offer|
counter-offer level|plan{|node|cap|held|used}" (limits/lua/_lib.lua authorization_reply), lands
in its place; a level's available credit is never below 0; a refusal raises Refused; a reply cut
short inside a level is an error, not one level fewer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditgate.limits import installments
from creditgate.limits.constants import AMOUNT_MINOR_MAX, CAP_MINOR_MAX, PRODUCT_NODES_MAX
from creditgate.limits.reasons import DeclineReason, ScriptError
from creditgate.limits.replies import (
    Authorization,
    IncrementResult,
    Level,
    Refused,
    decode_authorization,
    decode_increment,
)

amounts = st.integers(0, AMOUNT_MINOR_MAX)
times_ms = st.integers(0, 2**53 - 1)
nodes = st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,3}", fullmatch=True)
levels = st.lists(st.tuples(nodes, st.integers(0, 2 * CAP_MINOR_MAX), amounts, amounts),
                  max_size=PRODUCT_NODES_MAX)
replies = st.fixed_dictionaries({
    "reason": st.sampled_from(DeclineReason), "level": st.just("") | nodes,
    "hold_id": st.just("") | st.from_regex(r"[0-9]{3}-[A-Z2-7]{16}", fullmatch=True),
    "available": st.integers(0, 2 * CAP_MINOR_MAX), "now": times_ms, "expires": times_ms,
    "approved": st.integers(1, AMOUNT_MINOR_MAX), "partial": st.booleans(), "offer": amounts,
    "offer_level": st.sampled_from(["", "velocity.day", "velocity.month", "consumer"]),
    "months": st.sampled_from([0, 3, 12, 60]), "fee_bps": st.integers(0, 1_000),
    "levels": levels, "catalog_version": st.sampled_from(["", "-", "2026-12.1", "v7+a:b"])})


def reply_of(r: dict, version: bool = True) -> str:
    """The reply as reserve writes it (authorization_reply, then the catalog version);
    version=False: as increment writes it, no version."""
    plan = installments.plan(r["approved"], r["months"], r["fee_bps"]) if r["months"] else None
    head = [int(r["reason"]), r["level"], r["hold_id"], r["available"], r["now"], r["expires"],
            r["approved"], int(r["partial"]), r["offer"], r["offer_level"],
            plan.text() if plan else ""]
    return "OK|" + "|".join(map(str, head)) + "".join(
        f"|{node}|{cap}|{held}|{used}" for node, cap, held, used in r["levels"]) + (
        f"|{r['catalog_version']}" if version else "")


def expected(r: dict, version: bool = True) -> Authorization:
    plan = installments.plan(r["approved"], r["months"], r["fee_bps"]) if r["months"] else None
    return Authorization(
        r["reason"], r["level"], r["hold_id"], r["available"], r["now"], r["expires"],
        tuple(Level(node, cap, held, used, max(0, cap - held - used))
              for node, cap, held, used in r["levels"]),
        r["approved"], r["partial"], r["offer"], r["offer_level"], plan,
        r["catalog_version"] if version else "")


@given(reply=replies, as_bytes=st.booleans())
def test_every_field_of_a_reserve_reply_lands_in_its_place(reply, as_bytes):
    text = reply_of(reply)
    decoded = decode_authorization(text.encode() if as_bytes else text)
    assert decoded == expected(reply)
    assert type(decoded.reason) is DeclineReason
    assert decoded.approved == (reply["reason"] == DeclineReason.NONE)


@given(reply=replies, held=amounts)
def test_an_increment_reply_is_an_authorization_then_what_the_hold_holds(reply, held):
    assert decode_increment(f"{reply_of(reply, False)}|{held}") == IncrementResult(
        expected(reply, False), held)


def test_a_level_over_its_cap_has_nothing_available():
    reply = "OK|10|consumer||0|5|0|0|0|0|||consumer|1000|900|300|total|5000|900|300|v1"
    assert decode_authorization(reply).levels == (
        Level("consumer", 1000, 900, 300, 0), Level("total", 5000, 900, 300, 3800))


def test_a_refusal_raises_with_its_code_detail_and_time():
    with pytest.raises(Refused) as caught:
        decode_authorization(b"ERR|%d|k-1|1795600000000" % ScriptError.IDEMPOTENCY_MISMATCH)
    assert caught.value.code == ScriptError.IDEMPOTENCY_MISMATCH
    assert (caught.value.detail, caught.value.at_ms) == ("k-1", 1795600000000)


@pytest.mark.parametrize("cut", [1, 2, 3], ids=["no-used", "no-held", "no-cap"])
def test_a_reply_cut_short_inside_a_level_is_an_error(cut):
    whole = "OK|0||063-AAAAAAAAAAAAAAAA|10|5|9|100|0|0|||total|5000|100|0|consumer|1000|100|0"
    with pytest.raises((ValueError, LookupError)):  # the gateway answers INTERNAL
        decode_authorization(whole.rsplit("|", cut)[0] + "|v1")  # the version stays last


def test_an_unknown_reason_is_an_error():
    with pytest.raises((ValueError, LookupError)):
        decode_authorization("OK|99||h|10|5|9|100|0|0|||total|5000|100|0|v1")
