"""AuthorizeBatch: every item is answered exactly as a unary Authorize would answer it, in
order, with one Redis round trip for the batch; a bad item fails alone; the batch's own size is
bounded; duplicate idempotency keys inside a batch act as sequential calls."""

from __future__ import annotations

import itertools

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditgate.gateway import errors
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.limits import keys
from creditgate.limits.constants import (
    AMOUNT_MINOR_MAX,
    AUTHORIZE_BATCH_SIZE_MAX,
    AUTHORIZE_REQUEST_BYTES_MAX,
    AUTHORIZE_RESPONSE_BYTES_MAX,
    CAP_MINOR_MAX,
    ID_LENGTH_MAX,
    INSTALLMENT_MONTHS_MAX,
    INSTALLMENT_TERMS_MAX,
    NODE_NAME_LENGTH_MAX,
    PRODUCT_NODES_MAX,
)
from creditgate.limits.reasons import RESPONSE_CODE, DeclineReason
from tests.conftest import CUSTOMER_CAPS, PARTITIONS, served_gateway, snapshot
from tests.support import decision

CUSTOMER = "cust-batch"
OK = grpc.StatusCode.OK.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def authorize_request(key: str, customer_id: str = CUSTOMER, **overrides) -> pb.AuthorizeRequest:
    fields = dict(idempotency_key=key, customer_id=customer_id, product_id="scan_pay",
                  channel=pb.CHANNEL_POS, merchant_id="shop-1", mcc="5411", amount_minor=1_000,
                  currency="CNY")
    fields.update(overrides)
    return pb.AuthorizeRequest(**fields)


async def put_customer(admin, customer_id: str = CUSTOMER, caps=None,
                       status=pb.CUSTOMER_STATUS_ACTIVE) -> None:
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id=customer_id, status=status,
        caps_minor=CUSTOMER_CAPS if caps is None else caps))


async def unary_item(auth, request: pb.AuthorizeRequest) -> pb.AuthorizeBatchItem:
    """What a unary Authorize answers, in the shape of a batch item."""
    try:
        return pb.AuthorizeBatchItem(response=await auth.Authorize(request))
    except grpc.aio.AioRpcError as error:
        return pb.AuthorizeBatchItem(error=pb.BatchItemError(code=error.code().value[0],
                                                             message=error.details()))


async def held(auth, customer_id: str = CUSTOMER) -> dict[str, int]:
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id))
    return {level.node: level.held_minor for level in credit.levels}


def customer_key(customer_id: str) -> str:
    return keys.customer(keys.base(keys.partition_of(customer_id, PARTITIONS)), customer_id)


async def test_mixed_items_each_answered_as_unary_would_be_in_one_round_trip(
        redis, gateway, admin, auth):
    await put_customer(admin)
    await put_customer(admin, "cust-broken")
    # A customer record overwritten with another type: its script call fails in Redis.
    await redis.delete(customer_key("cust-broken"))
    await redis.set(customer_key("cust-broken"), "not a hash")
    requests = [
        authorize_request("good-1", amount_minor=1_000),
        authorize_request("bad-amount", amount_minor=0),
        authorize_request("bad-product", product_id="no-such-product"),
        authorize_request("good-2", amount_minor=2_000),
        authorize_request("bad-currency", currency="USD"),
        authorize_request("", amount_minor=3_000),
        authorize_request("unknown", "cust-nobody"),
        authorize_request("broken", "cust-broken"),
        authorize_request("bad-mcc", mcc="54x1"),
        authorize_request("good-3", amount_minor=4_000),
    ]
    counts_before = errors.counts.copy()
    batches_before = gateway.runner.batches_sent
    reply = await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=requests))
    # Every item that reached Redis (good, unknown customer, broken) went in one pipeline.
    assert gateway.runner.batches_sent - batches_before == 1
    items = list(reply.items)
    assert len(items) == len(requests)
    assert [item.WhichOneof("outcome") for item in items] == [
        "response", "error", "error", "response", "error", "error", "response", "error", "error",
        "response"]
    good = [items[0].response, items[3].response, items[9].response]
    assert all(r.approved and r.response_code == "00" for r in good)
    assert len({r.hold_id for r in good}) == 3
    assert items[6].response.decline_reason == pb.DECLINE_REASON_CUSTOMER_UNKNOWN
    fields = {1: "amount_minor", 2: "product_id", 4: "currency", 5: "idempotency_key",
              8: "mcc"}
    for index, field in fields.items():
        assert items[index].error.code == INVALID_ARGUMENT, items[index]
        assert items[index].error.message.startswith(f"{field}: "), items[index]
    assert items[7].error.code == grpc.StatusCode.INTERNAL.value[0]
    assert items[7].error.message == "internal error"
    counted = errors.counts - counts_before
    assert counted == {"INVALID_ARGUMENT": 5, "INTERNAL": 1, "OK": 1}  # OK: the batch call
    # Nothing was reserved for the failed items: only the three good ones are held.
    assert (await held(auth))["consumer.scan_pay.pos"] == 1_000 + 2_000 + 4_000
    # Each failed item is the unary call's own answer, code and message.
    for index in (*fields, 7):
        assert await unary_item(auth, requests[index]) == items[index], index


# One row per decline reason: the declined item is an answer (not an error) between two
# approved neighbours, with the unary call's reason and ISO 8583 response code.
CASH = dict(product_id="cash", channel=pb.CHANNEL_CASH, mcc="6011", amount_minor=10_000)
DECLINES = [
    pytest.param(DeclineReason.CUSTOMER_UNKNOWN, [], dict(customer_id="cust-nobody"),
                 id="customer-unknown"),
    pytest.param(DeclineReason.CUSTOMER_FROZEN, [], dict(customer_id="cust-frozen"),
                 id="customer-frozen"),
    pytest.param(DeclineReason.CHANNEL_NOT_ALLOWED, [], dict(channel=pb.CHANNEL_ECOMMERCE),
                 id="channel"),
    pytest.param(DeclineReason.MCC_NOT_ALLOWED, [], dict(mcc="7995"), id="mcc"),
    pytest.param(DeclineReason.AMOUNT_BELOW_MINIMUM, [], dict(amount_minor=99),
                 id="below-minimum"),
    pytest.param(DeclineReason.AMOUNT_ABOVE_MAXIMUM, [], dict(amount_minor=5_000_001),
                 id="above-maximum"),
    # The cash product allows three a day: the batch's first three use them.
    pytest.param(DeclineReason.VELOCITY_COUNT_EXCEEDED, [CASH] * 3, CASH, id="velocity-count"),
    pytest.param(DeclineReason.INSUFFICIENT_CREDIT, [], dict(amount_minor=499_500),
                 id="insufficient-credit"),
]


@pytest.mark.parametrize(("reason", "before", "declined"), DECLINES)
async def test_a_declined_item_is_an_answer_and_its_neighbours_approve(
        redis, admin, auth, reason, before, declined):
    await put_customer(admin)
    await put_customer(admin, "cust-frozen", status=pb.CUSTOMER_STATUS_FROZEN)
    requests = [authorize_request(f"before-{i}", **fields) for i, fields in enumerate(before)]
    requests += [authorize_request("left", amount_minor=1_000),
                 authorize_request("declined", **declined),
                 authorize_request("right", amount_minor=1_000)]
    reply = await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=requests))
    responses = [item.response for item in reply.items]
    assert all(item.WhichOneof("outcome") == "response" for item in reply.items)
    *approved, left, item, right = responses
    assert all(r.approved for r in (*approved, left, right))
    assert not item.approved and item.hold_id == ""
    assert item.decline_reason == reason
    assert item.response_code == RESPONSE_CODE[reason]
    if reason == DeclineReason.INSUFFICIENT_CREDIT:
        assert item.decline_level == "consumer.scan_pay.pos"
    # The declined item reserved nothing: the pos node holds the two neighbours.
    assert (await held(auth))["consumer.scan_pay.pos"] == 2_000


async def test_a_retried_batch_returns_the_first_answers_and_changes_nothing(
        redis, admin, auth):
    await put_customer(admin)
    requests = [authorize_request(f"k-{i}", amount_minor=1_000 + i) for i in range(12)]
    requests[3] = authorize_request("k-3", amount_minor=0)  # invalid
    requests[7] = authorize_request("k-7", mcc="7995")  # declined
    batch = pb.AuthorizeBatchRequest(requests=requests)
    first = await auth.AuthorizeBatch(batch)
    assert sum(item.response.approved for item in first.items) == 10
    before = await snapshot(redis)
    for _ in range(2):
        again = await auth.AuthorizeBatch(batch)
        # The first decisions; an approval's headroom is as of the retry.
        assert decision(again) == decision(first)
    assert await snapshot(redis) == before  # outbox included: no second event
    # The items' unary retries get the same answers too.
    assert decision((await unary_item(auth, requests[5])).response) == decision(
        first.items[5].response)


async def test_duplicate_keys_in_one_batch_act_as_sequential_calls(redis, gateway, admin, auth):
    await put_customer(admin)
    # The runner sends at most 4 calls per round trip here, so the duplicates straddle round
    # trips too: the order must hold across them.
    gateway.runner.batch_size_max = 4
    requests = [authorize_request(f"k-{i}", amount_minor=1_000) for i in range(10)]
    requests[1] = authorize_request("k-0", amount_minor=1_000)  # the same call again
    requests[4] = authorize_request("k-3", amount_minor=2_000)  # the same key, another payload
    requests[8] = authorize_request("k-3", amount_minor=2_000)  # and again, in another trip
    batches_before = gateway.runner.batches_sent
    reply = await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=requests))
    assert gateway.runner.batches_sent - batches_before == 3
    items = list(reply.items)
    assert items[0].response.approved
    assert items[1] == items[0]  # the replay is the first answer, hold and time included
    assert items[3].response.approved
    for index in (4, 8):
        assert items[index].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
        assert items[index].error.message.startswith("idempotency_key: ")
    approved = {item.response.hold_id for item in items if item.response.approved}
    assert len(approved) == 7  # ten items, three of them not new authorizations
    assert (await held(auth))["consumer.scan_pay.pos"] == 7_000


async def test_the_batch_size_is_bounded_and_nothing_happens_beyond_it(redis, admin, auth):
    await put_customer(admin)
    before = await snapshot(redis)
    too_many = [authorize_request(f"k-{i}") for i in range(AUTHORIZE_BATCH_SIZE_MAX + 1)]
    for requests in ([], too_many):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=requests))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith("requests: "), caught.value.details()
    assert await snapshot(redis) == before


async def test_a_full_batch_of_the_longest_ids_is_answered_in_order(redis, admin, auth):
    """AUTHORIZE_BATCH_SIZE_MAX items with ids of the longest valid length fit one message each
    way; each customer's answers show its items ran in item order (what is available falls by
    each approved amount in turn)."""
    customers = [f"{i}".rjust(ID_LENGTH_MAX, "c") for i in range(8)]
    for customer_id in customers:
        await put_customer(admin, customer_id)
    requests = [authorize_request(f"{i}".rjust(ID_LENGTH_MAX, "k"), customers[i % 8],
                                  merchant_id="m" * ID_LENGTH_MAX, amount_minor=100 + i)
                for i in range(AUTHORIZE_BATCH_SIZE_MAX)]
    reply = await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=requests))
    assert len(reply.items) == AUTHORIZE_BATCH_SIZE_MAX
    for index, customer_id in enumerate(customers):
        mine = [(request, item.response) for request, item in zip(requests, reply.items,
                                                                    strict=True)
                if request.customer_id == customer_id]
        available = CUSTOMER_CAPS["consumer.scan_pay.pos"]
        for request, response in mine:
            # The shipped catalog allows 50 scan-to-pay purchases a day: 32 here.
            assert response.approved, (index, response)
            available -= request.amount_minor
            level = {lv.node: lv for lv in response.levels}["consumer.scan_pay.pos"]
            assert level.available_minor == available


@pytest.mark.parametrize(("setting", "raw"), [("", True), ("redis-py", False)])
async def test_redis_py_pipelines_can_be_chosen_and_answer_alike(
        redis, redis_server, monkeypatch, setting, raw):
    monkeypatch.setenv("CREDITGATE_REDIS_PIPELINE", setting)
    async with served_gateway(redis_server) as served, grpc.aio.insecure_channel(
            f"127.0.0.1:{served.port}") as channel:
        assert served.runner.raw is raw
        admin, auth = pb_grpc.AdminStub(channel), pb_grpc.AuthorizationStub(channel)
        await put_customer(admin)
        reply = await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=[
            authorize_request("k-1"), authorize_request("k-2", amount_minor=0),
            authorize_request("k-1")]))
        assert reply.items[0].response.approved and reply.items[2] == reply.items[0]
        assert reply.items[1].error.code == INVALID_ARGUMENT


def test_the_largest_valid_item_fits_the_batch_message_bounds():
    longest = "x" * ID_LENGTH_MAX
    request = pb.AuthorizeRequest(
        idempotency_key=longest, customer_id=longest, product_id=longest,
        channel=pb.CHANNEL_ECOMMERCE, merchant_id=longest, mcc="9999",
        amount_minor=AMOUNT_MINOR_MAX, currency="CNY", allow_partial=True,
        installment_months=INSTALLMENT_MONTHS_MAX)
    assert request.ByteSize() <= AUTHORIZE_REQUEST_BYTES_MAX
    plan = pb.InstallmentPlan(
        months=INSTALLMENT_MONTHS_MAX, principal_minor=AMOUNT_MINOR_MAX,
        first_installment_minor=AMOUNT_MINOR_MAX, installment_minor=AMOUNT_MINOR_MAX,
        fee_per_installment_minor=AMOUNT_MINOR_MAX, fee_total_minor=2**53 - 1,
        monthly_fee_bps=10_000)
    # Caps with a raise, and held plus used, stay below 2**53 (limits/constants.py).
    level = pb.LevelHeadroom(node="n" * NODE_NAME_LENGTH_MAX, cap_minor=2 * CAP_MINOR_MAX,
                             held_minor=2**53 - 1, used_minor=2**53 - 1,
                             available_minor=2 * CAP_MINOR_MAX)
    response = pb.AuthorizeResponse(
        approved=True, decline_reason=max(DeclineReason), response_code="65",
        decline_level="n" * NODE_NAME_LENGTH_MAX, hold_id=longest,
        available_minor=2 * CAP_MINOR_MAX, levels=[level] * PRODUCT_NODES_MAX,
        hold_expires_at_ms=2**53 - 1, decided_at_ms=2**53 - 1, partial=True,
        approved_amount_minor=AMOUNT_MINOR_MAX, counter_offer_minor=AMOUNT_MINOR_MAX,
        counter_offer_level="velocity.month", counter_offer_plans=[plan] * INSTALLMENT_TERMS_MAX,
        installment_plan=plan)
    assert response.ByteSize() <= AUTHORIZE_RESPONSE_BYTES_MAX
    item = pb.AuthorizeBatchItem(response=response)
    framing = pb.AuthorizeBatchResponse(items=[item]).ByteSize() - response.ByteSize()
    assert framing <= 6


# -- a batch equals the same requests sent one by one -------------------------------------------

_examples = itertools.count()
SMALL_CAPS = {"total": 60_000, "consumer": 50_000, "consumer.scan_pay": 40_000,
              "consumer.scan_pay.pos": 30_000, "consumer.scan_pay.qr": 25_000,
              "consumer.online": 35_000, "cash": 30_000}
items_strategy = st.lists(
    st.tuples(
        st.sampled_from(["k0", "k1", "k2", "k3", "k4", "k5"]),  # duplicates are likely
        st.sampled_from([("scan_pay", pb.CHANNEL_POS), ("scan_pay", pb.CHANNEL_QR_SCAN),
                         ("ecommerce", pb.CHANNEL_ECOMMERCE), ("scan_pay", pb.CHANNEL_CASH)]),
        st.sampled_from([0, 50, 1_000, 4_000, 9_000, 20_000, 5_000_001]),
        st.sampled_from(["5411", "7995", "54x1"]),
    ),
    min_size=1, max_size=24)


def comparable(items) -> list:
    """The outcomes with what differs between two customers made comparable: hold ids become
    the index of the item that first answered with them, times become the hold's TTL."""
    first_seen: dict[str, int] = {}
    out = []
    for index, item in enumerate(items):
        if item.WhichOneof("outcome") == "error":
            out.append(("error", item.error.code, item.error.message))
            continue
        response = pb.AuthorizeResponse()
        response.CopyFrom(item.response)
        hold = first_seen.setdefault(response.hold_id, index) if response.hold_id else None
        ttl_ms = response.hold_expires_at_ms - response.decided_at_ms if response.approved else 0
        response.ClearField("hold_id")
        response.ClearField("decided_at_ms")
        response.ClearField("hold_expires_at_ms")
        out.append(("response", hold, ttl_ms, response.SerializeToString(deterministic=True)))
    return out


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=items_strategy)
async def test_a_batch_answers_as_its_items_sent_one_by_one(admin, auth, items):
    """Two fresh customers with the same caps: one gets the items as one batch, the other one by
    one; every outcome and the final usage are equal."""
    example = next(_examples)
    batched, sequential = f"hyp-{example}-a", f"hyp-{example}-b"
    for customer_id in (batched, sequential):
        await put_customer(admin, customer_id, SMALL_CAPS)

    def requests(customer_id: str) -> list[pb.AuthorizeRequest]:
        return [authorize_request(key, customer_id, product_id=product, channel=channel,
                                  amount_minor=amount, mcc=mcc)
                for key, (product, channel), amount, mcc in items]

    reply = await auth.AuthorizeBatch(pb.AuthorizeBatchRequest(requests=requests(batched)))
    one_by_one = [await unary_item(auth, request) for request in requests(sequential)]
    assert comparable(reply.items) == comparable(one_by_one)
    assert await held(auth, batched) == await held(auth, sequential)
