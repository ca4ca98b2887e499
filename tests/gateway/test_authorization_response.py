"""The AuthorizeResponse of a decoded reserve reply (gateway.responses.authorization_response):
each field from its place in the reply, the levels in order, the installment plan, and a
counter-offer's plans for every term of the product; written in place into a batch item, it is
the same message as built on its own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.responses import authorization_response
from creditgate.limits import installments
from creditgate.limits.reasons import PARTIAL_APPROVAL_CODE, RESPONSE_CODE, DeclineReason
from creditgate.limits.replies import decode_authorization
from tests.limits.test_reply_decoding import replies, reply_of
from tests.support import PRODUCTS

products = st.sampled_from([None, *PRODUCTS.values()])


def plan_message(plan: installments.Plan) -> pb.InstallmentPlan:
    return pb.InstallmentPlan(
        months=plan.months, principal_minor=plan.principal_minor,
        first_installment_minor=plan.first_installment_minor,
        installment_minor=plan.installment_minor,
        fee_per_installment_minor=plan.fee_per_installment_minor,
        fee_total_minor=plan.fee_total_minor, monthly_fee_bps=plan.monthly_fee_bps)


def expected(result, product) -> pb.AuthorizeResponse:
    """The response field by field, built the plain way."""
    offers = []
    if result.counter_offer_minor > 0 and product is not None:
        terms = product.installments
        offers = [plan_message(installments.plan(result.counter_offer_minor, months,
                                                 terms.monthly_fee_bps))
                  for months in sorted(terms.months)]
    return pb.AuthorizeResponse(
        approved=result.reason == DeclineReason.NONE, decline_reason=int(result.reason),
        response_code=PARTIAL_APPROVAL_CODE if result.partial else RESPONSE_CODE[result.reason],
        decline_level=result.level, hold_id=result.hold_id,
        available_minor=result.available_minor,
        levels=[pb.LevelHeadroom(node=level.node, cap_minor=level.cap_minor,
                                 held_minor=level.held_minor, used_minor=level.used_minor,
                                 available_minor=level.available_minor)
                for level in result.levels],
        hold_expires_at_ms=result.hold_expires_at_ms, decided_at_ms=result.decided_at_ms,
        partial=result.partial, approved_amount_minor=result.approved_amount_minor,
        counter_offer_minor=result.counter_offer_minor,
        counter_offer_level=result.counter_offer_level,
        installment_plan=plan_message(result.plan) if result.plan else None,
        counter_offer_plans=offers, catalog_version=result.catalog_version)


@given(reply=replies, product=products)
def test_each_field_comes_from_its_place_in_the_reply(reply, product):
    result = decode_authorization(reply_of(reply))
    response = authorization_response(result, product)
    assert response == expected(result, product)
    assert response.HasField("installment_plan") == bool(reply["months"])
    assert [level.node for level in response.levels] == [node for node, *_ in reply["levels"]]


@given(reply=replies, product=products)
def test_written_into_a_batch_item_it_is_the_same_message(reply, product):
    result = decode_authorization(reply_of(reply))
    batch = pb.AuthorizeBatchResponse()
    item = batch.items.add()
    authorization_response(result, product, item.response)
    assert item.WhichOneof("outcome") == "response"
    assert item.response == authorization_response(result, product)
    assert batch.SerializeToString() == pb.AuthorizeBatchResponse(items=[pb.AuthorizeBatchItem(
        response=expected(result, product))]).SerializeToString()


def test_a_counter_offer_lists_a_plan_for_every_term_of_the_product():
    reply = "OK|10|consumer||0|1795600000000|0|0|0|120000|consumer||consumer|1000|880|0|v1"
    response = authorization_response(decode_authorization(reply), PRODUCTS["ecommerce"])
    assert [plan.months for plan in response.counter_offer_plans] == [3, 6, 12, 24]
    assert all(plan.principal_minor == 120_000 for plan in response.counter_offer_plans)
    assert response.counter_offer_plans[0].fee_total_minor == 3 * 600  # 50 bps a month
    assert not response.HasField("installment_plan")
