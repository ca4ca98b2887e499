"""Invariant 6, clear refusal: bad input is INVALID_ARGUMENT naming the field, nothing changes in
Redis, and the server keeps serving."""

from __future__ import annotations

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits.constants import (
    AMOUNT_MINOR_MAX,
    CAP_MINOR_MAX,
    CUSTOMER_CAPS_MAX,
    ID_LENGTH_MAX,
)
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, snapshot

CUSTOMER = "cust-bad-input"

# Every way an id (idempotency key, customer, merchant) can be malformed.
BAD_IDS = {
    "empty": "",
    "65 chars": "k" * (ID_LENGTH_MAX + 1),
    "open brace": "a{b",
    "close brace": "a}b",
    "pipe": "a|b",
    "space": "a b",
    "control": "a\x01b",
    "non-ascii": "caf\u00e9",
}


def _id_cases(field: str) -> list:
    return [pytest.param(field, value, id=f"{field}-{name}") for name, value in BAD_IDS.items()]


def authorize_request(**overrides) -> pb.AuthorizeRequest:
    fields = dict(idempotency_key="auth-1", customer_id=CUSTOMER, product_id="scan_pay",
                  channel=pb.CHANNEL_POS, merchant_id="shop-1", mcc="5411", amount_minor=1_000,
                  currency="CNY")
    fields.update(overrides)
    return pb.AuthorizeRequest(**fields)


async def _put_customer(admin) -> None:
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id=CUSTOMER,
                                                  status=pb.CUSTOMER_STATUS_ACTIVE,
                                                  caps_minor=CUSTOMER_CAPS))


async def _open_hold(admin, auth) -> str:
    await _put_customer(admin)
    reply = await auth.Authorize(authorize_request(idempotency_key="setup", amount_minor=5_000))
    assert reply.approved
    return reply.hold_id


async def _expect_invalid(redis, call, request, field: str) -> None:
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert caught.value.details().startswith(f"{field}: "), caught.value.details()
    assert await snapshot(redis) == before


# -- Authorize ----------------------------------------------------------------------------------

AUTHORIZE_CASES = [
    *_id_cases("idempotency_key"),
    *_id_cases("customer_id"),
    *_id_cases("merchant_id"),
    pytest.param("product_id", "", id="product-empty"),
    pytest.param("product_id", "no_such_product", id="product-unknown"),
    pytest.param("product_id", "SCAN_PAY", id="product-wrong-case"),
    pytest.param("channel", 0, id="channel-unspecified"),
    pytest.param("channel", 42, id="channel-42"),
    pytest.param("mcc", "", id="mcc-empty"),
    pytest.param("mcc", "12a4", id="mcc-letter"),
    pytest.param("mcc", "12345", id="mcc-five-digits"),
    pytest.param("mcc", "123", id="mcc-three-digits"),
    pytest.param("mcc", "\uff11\uff12\uff13\uff14", id="mcc-fullwidth-digits"),
    pytest.param("amount_minor", 0, id="amount-zero"),
    pytest.param("amount_minor", -1, id="amount-negative"),
    pytest.param("amount_minor", AMOUNT_MINOR_MAX + 1, id="amount-too-big"),
    pytest.param("amount_minor", -(2**63), id="amount-int64-min"),
    pytest.param("currency", "", id="currency-empty"),
    pytest.param("currency", "XYZ", id="currency-unknown"),
    pytest.param("currency", "cny", id="currency-lower-case"),
]


@pytest.mark.parametrize(("field", "value"), AUTHORIZE_CASES)
async def test_authorize_bad_field(redis, admin, auth, field, value):
    await _put_customer(admin)
    await _expect_invalid(redis, auth.Authorize, authorize_request(**{field: value}), field)
    reply = await auth.Authorize(authorize_request(amount_minor=1_234))
    assert reply.approved
    assert reply.levels[0].held_minor == 1_234


async def test_authorize_id_of_64_characters_is_accepted(admin, auth):
    """The boundary: 64 printable characters (including '~') are a valid id."""
    await _put_customer(admin)
    key = "~" + "k" * (ID_LENGTH_MAX - 1)
    reply = await auth.Authorize(authorize_request(idempotency_key=key, merchant_id=key))
    assert reply.approved


# -- Capture ------------------------------------------------------------------------------------

CAPTURE_CASES = [
    *_id_cases("idempotency_key"),
    pytest.param("hold_id", "", id="hold-empty"),
    pytest.param("hold_id", "abc", id="hold-abc"),
    pytest.param("hold_id", "999-AAAAAAAAAAAAAAAA", id="hold-partition-999"),
    pytest.param("hold_id", f"{PARTITIONS:03d}-AAAAAAAAAAAAAAAA", id="hold-partition-limit"),
    pytest.param("hold_id", "001-SHORT", id="hold-short-token"),
    pytest.param("hold_id", "01-AAAAAAAAAAAAAAAAA", id="hold-two-digit-partition"),
    pytest.param("hold_id", "001-AAAA AAAAAAAAAAA", id="hold-space"),
    pytest.param("amount_minor", 0, id="amount-zero"),
    pytest.param("amount_minor", -5, id="amount-negative"),
    pytest.param("amount_minor", AMOUNT_MINOR_MAX + 1, id="amount-too-big"),
]


@pytest.mark.parametrize(("field", "value"), CAPTURE_CASES)
async def test_capture_bad_field(redis, admin, auth, field, value):
    hold_id = await _open_hold(admin, auth)
    fields = dict(idempotency_key="cap-1", hold_id=hold_id, amount_minor=2_000, final=False)
    fields[field] = value
    await _expect_invalid(redis, auth.Capture, pb.CaptureRequest(**fields), field)
    reply = await auth.Capture(pb.CaptureRequest(idempotency_key="cap-ok", hold_id=hold_id,
                                                 amount_minor=2_000))
    assert (reply.captured_minor, reply.held_minor) == (2_000, 5_000 - 2_000)


# -- Void ---------------------------------------------------------------------------------------

VOID_CASES = [
    *_id_cases("idempotency_key"),
    pytest.param("hold_id", "", id="hold-empty"),
    pytest.param("hold_id", "abc", id="hold-abc"),
    pytest.param("hold_id", "999-AAAAAAAAAAAAAAAA", id="hold-partition-999"),
    pytest.param("hold_id", "001-SHORT", id="hold-short-token"),
    pytest.param("hold_id", "001-AAAAAAAAAAAAAAAA}", id="hold-brace"),
]


@pytest.mark.parametrize(("field", "value"), VOID_CASES)
async def test_void_bad_field(redis, admin, auth, field, value):
    hold_id = await _open_hold(admin, auth)
    fields = dict(idempotency_key="void-1", hold_id=hold_id)
    fields[field] = value
    await _expect_invalid(redis, auth.Void, pb.VoidRequest(**fields), field)
    reply = await auth.Void(pb.VoidRequest(idempotency_key="void-ok", hold_id=hold_id))
    assert (reply.state, reply.released_minor) == (pb.HOLD_STATE_VOIDED, 5_000)


# -- GetCredit ----------------------------------------------------------------------------------

GET_CREDIT_CASES = [
    *_id_cases("customer_id"),
    pytest.param("product_id", "no_such_product", id="product-unknown"),
]


@pytest.mark.parametrize(("field", "value"), GET_CREDIT_CASES)
async def test_get_credit_bad_field(redis, admin, auth, field, value):
    await _put_customer(admin)
    fields = dict(customer_id=CUSTOMER, product_id="scan_pay")
    fields[field] = value
    await _expect_invalid(redis, auth.GetCredit, pb.GetCreditRequest(**fields), field)
    reply = await auth.GetCredit(pb.GetCreditRequest(customer_id=CUSTOMER))
    assert {level.node: level.cap_minor for level in reply.levels} == CUSTOMER_CAPS


# -- PutCustomer --------------------------------------------------------------------------------

TOO_MANY_CAPS = {f"node_{i:03d}": 1_000 for i in range(CUSTOMER_CAPS_MAX + 1)}

PUT_CUSTOMER_CASES = [
    *_id_cases("customer_id"),
    pytest.param("status", pb.CUSTOMER_STATUS_UNSPECIFIED, id="status-unspecified"),
    pytest.param("status", 17, id="status-unknown-number"),
    pytest.param("timezone", "Mars/Olympus", id="timezone-unknown"),
    pytest.param("timezone", "../etc", id="timezone-dotdot"),
    pytest.param("timezone", "/etc/localtime", id="timezone-absolute-path"),
    pytest.param("timezone", "Asia/../Asia/Shanghai", id="timezone-inner-dotdot"),
    pytest.param("caps_minor", {"Total": 1_000}, id="cap-node-upper-case"),
    pytest.param("caps_minor", {"a..b": 1_000}, id="cap-node-empty-word"),
    pytest.param("caps_minor", {"": 1_000}, id="cap-node-empty"),
    pytest.param("caps_minor", {"total.": 1_000}, id="cap-node-trailing-dot"),
    pytest.param("caps_minor", {"a" * 49: 1_000}, id="cap-node-too-long"),
    pytest.param("caps_minor", {"total": -1}, id="cap-negative"),
    pytest.param("caps_minor", {"total": CAP_MINOR_MAX + 1}, id="cap-too-big"),
    pytest.param("caps_minor", TOO_MANY_CAPS, id="caps-too-many"),
]


@pytest.mark.parametrize(("field", "value"), PUT_CUSTOMER_CASES)
async def test_put_customer_bad_field(redis, admin, field, value):
    await _put_customer(admin)  # a customer exists: a refused replacement must not touch it
    fields = dict(customer_id=CUSTOMER, status=pb.CUSTOMER_STATUS_FROZEN,
                  timezone="Europe/Berlin", caps_minor={"total": 5_000})
    fields[field] = value
    await _expect_invalid(redis, admin.PutCustomer, pb.PutCustomerRequest(**fields), field)
    stored = await admin.GetCustomer(pb.GetCustomerRequest(customer_id=CUSTOMER))
    assert (stored.status, stored.timezone) == (pb.CUSTOMER_STATUS_ACTIVE, "Asia/Shanghai")
    assert dict(stored.caps_minor) == CUSTOMER_CAPS
    # Still serving: a valid replacement is applied.
    caps = {"total": 7_000, "cash": 0}
    await admin.PutCustomer(pb.PutCustomerRequest(customer_id=CUSTOMER,
                                                  status=pb.CUSTOMER_STATUS_FROZEN,
                                                  timezone="Europe/Berlin", caps_minor=caps))
    stored = await admin.GetCustomer(pb.GetCustomerRequest(customer_id=CUSTOMER))
    assert (stored.status, stored.timezone, dict(stored.caps_minor)) == (
        pb.CUSTOMER_STATUS_FROZEN, "Europe/Berlin", caps)


async def test_put_customer_boundaries_are_accepted(admin):
    caps = {f"node_{i:03d}": i for i in range(CUSTOMER_CAPS_MAX - 1)}
    caps["a" * 48] = CAP_MINOR_MAX
    reply = await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id=CUSTOMER, status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=caps))
    assert dict(reply.caps_minor) == caps
    stored = await admin.GetCustomer(pb.GetCustomerRequest(customer_id=CUSTOMER))
    assert dict(stored.caps_minor) == caps


# -- GetCustomer --------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), _id_cases("customer_id"))
async def test_get_customer_bad_field(redis, admin, field, value):
    await _put_customer(admin)
    await _expect_invalid(redis, admin.GetCustomer, pb.GetCustomerRequest(customer_id=value),
                          field)
    stored = await admin.GetCustomer(pb.GetCustomerRequest(customer_id=CUSTOMER))
    assert dict(stored.caps_minor) == CUSTOMER_CAPS


# -- Well-formed but unknown --------------------------------------------------------------------


async def _expect_not_found(redis, call, request, field: str) -> None:
    before = await snapshot(redis)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()
    assert caught.value.details().startswith(f"{field}: "), caught.value.details()
    assert await snapshot(redis) == before


async def test_unknown_customer_is_not_found(redis, admin, auth):
    await _put_customer(admin)
    await _expect_not_found(redis, auth.GetCredit,
                            pb.GetCreditRequest(customer_id="nobody"), "customer_id")
    await _expect_not_found(redis, auth.GetCredit,
                            pb.GetCreditRequest(customer_id="nobody", product_id="cash"),
                            "customer_id")
    await _expect_not_found(redis, admin.GetCustomer,
                            pb.GetCustomerRequest(customer_id="nobody"), "customer_id")


async def test_unknown_hold_is_not_found(redis, admin, auth):
    hold_id = await _open_hold(admin, auth)
    partition, _, token = hold_id.partition("-")
    # Same partition, another token; and a hold id in another partition.
    other_token = "A" * len(token) if token != "A" * len(token) else "B" * len(token)
    missing = [f"{partition}-{other_token}",
               f"{(int(partition) + 1) % PARTITIONS:03d}-{token}"]
    for missing_id in missing:
        await _expect_not_found(redis, auth.Capture, pb.CaptureRequest(
            idempotency_key="cap-x", hold_id=missing_id, amount_minor=100), "hold_id")
        await _expect_not_found(redis, auth.Void, pb.VoidRequest(
            idempotency_key="void-x", hold_id=missing_id), "hold_id")
    reply = await auth.Void(pb.VoidRequest(idempotency_key="void-ok", hold_id=hold_id))
    assert reply.released_minor == 5_000
