"""Customers written by layout 1 keep working: the scripts of commit 4e479d1 (frozen, assembled,
in tests/limits/layout1/) write a customer with holds, a capture, a raise and velocity windows;
then the first script of this layout that touches the customer, whichever it is, upgrades it in
the same call and answers exactly as the model does from the same state (the model upgrades it
too). Holds and idempotency records have the same layout in both: a retry of a layout-1
approval finds its hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from creditgate import hotpath
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath.plans import (
    plan_force_capture,
    plan_increment,
    plan_refund,
    plan_repay,
    plan_reverse,
    repayment_order,
)
from creditgate.limits import calendar, contracts, keys
from creditgate.limits.contracts import call_header
from creditgate.limits.model import Model
from creditgate.limits.transport import ScriptRunner
from tests.limits.test_model_equivalence import normalise, redis_state, reply_now
from tests.support import PARTITIONS, PRODUCTS, RULES, authorize_request

LAYOUT1 = Path(__file__).parent / "layout1"
CONTRACTS = json.loads((LAYOUT1 / "contracts.json").read_text())
CUSTOMER = "old-1"
BASE = keys.base(keys.partition_of(CUSTOMER, PARTITIONS))
CAPS = {"total": 2_000_000, "consumer": 1_500_000, "consumer.scan_pay": 900_000,
        "consumer.scan_pay.pos": 700_000, "consumer.scan_pay.qr": 600_000,
        "consumer.online": 800_000, "cash": 400_000}
DAY_MS = 86_400_000
LAYOUT_1_FIELDS = ("st", "cap:total", "h:total", "u:total", "tr:consumer", "vd:scan_pay",
                   "vm:scan_pay")


async def layout_1(redis, name: str, keys_: list[str], fields: dict[str, str],
                   rest: list[str] = ()) -> str:
    """One call of a frozen layout-1 script, its ARGV built by its own contract's names."""
    contract = CONTRACTS[name]
    assert len(keys_) == len(contract["keys"]), name
    args = [fields[field] for field in contract["args"]] + list(rest)
    reply = await redis.eval((LAYOUT1 / f"{name}.lua").read_text(), len(keys_), *keys_,
                             *call_header(), *args)
    return normalise(reply)


async def layout_1_authorize(redis, key: str, amount: int, **request) -> str:
    """Layout 1's reserve, with the arguments of this layout's plan named as it took them."""
    keys_, args = hotpath.plan_authorize(authorize_request(key, CUSTOMER, amount, **request),
                                         RULES, PARTITIONS)
    a = contracts.RESERVE.args
    rules = contracts.PRODUCT_RULES.bind(args[a.rules].split(contracts.RULES_SEPARATOR))
    fields = {name: args[getattr(a, name)] for name in a.names}
    fields.update((name, getattr(rules, name)) for name in contracts.PRODUCT_RULES.names)
    reply = await layout_1(redis, "reserve", keys_, fields,
                           rules.nodes.split(contracts.NODES_SEPARATOR))
    assert reply.startswith("OK|0||"), reply
    return reply.split("|")[3]


async def layout_1_customer(redis) -> dict[str, str]:
    """A customer as layout 1 left it: three open holds (one partly captured), a raise, and
    the velocity windows of scan_pay. Returns the hold ids by name."""
    customer_key = keys.customer(BASE, CUSTOMER)
    rest = [text for node, cap in sorted(CAPS.items()) for text in (node, str(cap))]
    reply = await layout_1(redis, "put_customer",
                           [customer_key, keys.outbox(BASE), keys.timezones(BASE)],
                           {"customer_id": CUSTOMER, "status": "active",
                            "timezone": "Asia/Shanghai",
                            "schedule": calendar.offset_schedule("Asia/Shanghai",
                                                                 1_795_600_000)}, rest)
    assert reply.startswith("OK|"), reply
    holds = {"pos": await layout_1_authorize(redis, "k1", 10_000),
             "qr": await layout_1_authorize(redis, "k2", 20_000, channel="qr_scan", mcc="5812"),
             "online": await layout_1_authorize(redis, "k3", 30_000, product_id="ecommerce",
                                                channel="ecommerce", mcc="5999")}
    capture_keys, capture_args = hotpath.plan_capture(pb.CaptureRequest(
        idempotency_key="c1", hold_id=holds["qr"], amount_minor=5_000), PARTITIONS)
    reply = await layout_1(redis, "capture", capture_keys,
                           dict(zip(CONTRACTS["capture"]["args"], capture_args, strict=True)))
    assert reply.startswith("OK|open|5000|"), reply
    now_ms = int(reply.split("|")[-1])
    reply = await layout_1(redis, "set_raise", [customer_key, keys.outbox(BASE)],
                           {"customer_id": CUSTOMER, "node": "consumer",
                            "raise_minor": "50000", "expires_at_ms": str(now_ms + DAY_MS)})
    assert reply.startswith("OK|"), reply
    stored = {k.decode(): v.decode() for k, v in (await redis.hgetall(customer_key)).items()}
    assert set(LAYOUT_1_FIELDS) <= set(stored), stored
    return holds


def first_call(name: str, holds: dict[str, str]) -> tuple[list[str], list[str]]:
    """The (keys, args) of a call of this layout that touches the customer first."""
    customer_key = keys.customer(BASE, CUSTOMER)
    if name == "reserve":
        return hotpath.plan_authorize(authorize_request("k9", CUSTOMER, 40_000), RULES,
                                      PARTITIONS)
    if name == "reserve_retry":
        return hotpath.plan_authorize(authorize_request("k1", CUSTOMER, 10_000), RULES,
                                      PARTITIONS)
    if name == "capture":
        return hotpath.plan_capture(pb.CaptureRequest(
            idempotency_key="c9", hold_id=holds["pos"], amount_minor=10_000, final=True),
            PARTITIONS)
    if name == "void":
        return hotpath.plan_void(pb.VoidRequest(idempotency_key="v9", hold_id=holds["pos"]),
                                 PARTITIONS)
    if name == "refund":
        return plan_refund(pb.RefundRequest(idempotency_key="r9", hold_id=holds["qr"],
                                            amount_minor=2_000), PARTITIONS)
    if name == "increment":
        return plan_increment(pb.IncrementAuthorizationRequest(
            idempotency_key="i9", hold_id=holds["online"], amount_minor=5_000), PARTITIONS)
    if name == "reverse":
        return plan_reverse(pb.ReverseRequest(customer_id=CUSTOMER,
                                              original_idempotency_key="k1"), PARTITIONS)
    if name == "force_capture":
        return plan_force_capture(pb.ForceCaptureRequest(
            idempotency_key="f9", customer_id=CUSTOMER, product_id="scan_pay",
            channel=pb.CHANNEL_POS, merchant_id="m-1", mcc="5411", amount_minor=7_000,
            currency="CNY"), PRODUCTS, PARTITIONS, "ABCDEFGHJKABCDEF")
    if name == "repay":
        return plan_repay(pb.RepayRequest(idempotency_key="p9", customer_id=CUSTOMER,
                                          amount_minor=3_000), repayment_order(PRODUCTS),
                          PARTITIONS)
    if name == "set_raise":
        return ([customer_key, keys.outbox(BASE)],
                [CUSTOMER, "consumer", "0", "0"])  # removes the layout-1 raise
    if name == "put_customer":
        caps = {**CAPS, "consumer": 1_000_000}
        del caps["cash"]
        return ([customer_key, keys.outbox(BASE), keys.timezones(BASE)],
                [CUSTOMER, "frozen", "Asia/Shanghai",
                 calendar.offset_schedule("Asia/Shanghai", 1_795_600_000),
                 *(text for node, cap in sorted(caps.items()) for text in (node, str(cap)))])
    if name == "credit":
        return [customer_key, keys.due(BASE), keys.outbox(BASE)], [BASE, CUSTOMER]
    assert name == "expire", name
    return [keys.customer_holds(BASE, CUSTOMER), keys.due(BASE), keys.outbox(BASE)],\
        [BASE, CUSTOMER]


@pytest.mark.parametrize("name", ["reserve", "reserve_retry", "capture", "void", "refund",
                                  "increment", "reverse", "force_capture", "repay",
                                  "set_raise", "put_customer", "credit", "expire"])
async def test_the_first_script_to_touch_a_layout_1_customer_upgrades_it(redis, name):
    holds = await layout_1_customer(redis)
    before = {k.decode(): v.decode() for k, v in
              (await redis.hgetall(keys.customer(BASE, CUSTOMER))).items()}
    model_now = 0
    model = Model(lambda: model_now)
    model.state = await redis_state(redis)
    runner = ScriptRunner(redis)
    script = name.removesuffix("_retry")
    keys_, args = first_call(name, holds)
    # The sweeper's pass comes after the holds expired; every other call comes at once.
    offset_ms = 8 * DAY_MS if name == "expire" else 0
    args = [*call_header(offset_ms), *args]
    real = normalise(await runner.call(script, keys_, args))
    model_now = reply_now(real, script) - offset_ms
    modelled = model.call(script, keys_, args)
    if script == "credit":  # a hash's field order is Redis' own
        assert dict(zip(real[1::2], real[2::2], strict=True)) == dict(
            zip(modelled[1::2], modelled[2::2], strict=True))
    else:
        assert real == modelled
        assert not real.startswith("ERR|") and not real.startswith("0|"), real
    assert await redis_state(redis) == {key: value for key, value in model.state.items()
                                        if value != {}}
    after = {k.decode(): v.decode() for k, v in
             (await redis.hgetall(keys.customer(BASE, CUSTOMER))).items()}
    assert after[keys.FIELD_LAYOUT] == str(keys.CUSTOMER_LAYOUT)
    assert not set(LAYOUT_1_FIELDS) & set(after), after
    if name == "reserve_retry":  # the first decision, from the layout-1 hold
        assert real.split("|")[3] == holds["pos"]
    if name in ("credit", "reserve_retry"):  # nothing changed: the same levels, read anew
        assert keys.levels_of(after) == keys.levels_of(before)


async def test_levels_of_reads_both_layouts_alike(redis):
    """What reconciliation reads: a layout-1 customer's levels equal those of its upgrade."""
    await layout_1_customer(redis)
    customer_key = keys.customer(BASE, CUSTOMER)
    before = {k.decode(): v.decode() for k, v in (await redis.hgetall(customer_key)).items()}
    levels = keys.levels_of(before)
    assert (levels["total"].held, levels["total"].used) == (10_000 + 15_000 + 30_000, 5_000)
    assert (levels["consumer"].raise_minor, levels["consumer"].cap) == (50_000, 1_500_000)
    runner = ScriptRunner(redis)
    await runner.call("credit", [customer_key, keys.due(BASE), keys.outbox(BASE)],
                      [*call_header(), BASE, CUSTOMER])
    after = {k.decode(): v.decode() for k, v in (await redis.hgetall(customer_key)).items()}
    assert keys.levels_of(after) == levels
    assert after[keys.FIELD_VELOCITY + "scan_pay"].count(":") == 5
