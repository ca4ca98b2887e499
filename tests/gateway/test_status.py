"""Status rules: a frozen, closed or overdue customer gets no new authorization, but what is
already in flight settles: captures, voids and refunds of its holds go through."""

from __future__ import annotations

import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits.reasons import RESPONSE_CODE, DeclineReason
from tests.conftest import CUSTOMER_CAPS

STATUSES = [(pb.CUSTOMER_STATUS_FROZEN, DeclineReason.CUSTOMER_FROZEN),
            (pb.CUSTOMER_STATUS_CLOSED, DeclineReason.CUSTOMER_CLOSED),
            (pb.CUSTOMER_STATUS_OVERDUE, DeclineReason.CUSTOMER_OVERDUE)]


def _authorize(key: str, amount: int) -> pb.AuthorizeRequest:
    return pb.AuthorizeRequest(idempotency_key=key, customer_id="c-st", product_id="scan_pay",
                               channel=pb.CHANNEL_POS, merchant_id="m", mcc="5411",
                               amount_minor=amount, currency="CNY")


@pytest.mark.parametrize(("status", "reason"), STATUSES)
async def test_status_blocks_new_authorizations_but_not_settlement(admin, auth, status, reason):
    put = pb.PutCustomerRequest(customer_id="c-st", status=pb.CUSTOMER_STATUS_ACTIVE,
                                caps_minor=CUSTOMER_CAPS)
    await admin.PutCustomer(put)
    to_capture = await auth.Authorize(_authorize("a1", 5_000))
    to_void = await auth.Authorize(_authorize("a2", 2_000))
    put.status = status
    await admin.PutCustomer(put)

    declined = await auth.Authorize(_authorize("a3", 1_000))
    assert (declined.approved, declined.decline_reason, declined.response_code) == (
        False, reason, RESPONSE_CODE[reason])
    captured = await auth.Capture(pb.CaptureRequest(
        idempotency_key="c1", hold_id=to_capture.hold_id, amount_minor=5_000, final=True))
    assert captured.state == pb.HOLD_STATE_CAPTURED
    voided = await auth.Void(pb.VoidRequest(idempotency_key="v1", hold_id=to_void.hold_id))
    assert voided.released_minor == 2_000
    refunded = await auth.Refund(pb.RefundRequest(
        idempotency_key="r1", hold_id=to_capture.hold_id, amount_minor=1_500))
    assert refunded.refundable_minor == 3_500
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id="c-st"))
    assert credit.status == status
    total = {level.node: level for level in credit.levels}["total"]
    assert (total.held_minor, total.used_minor) == (0, 3_500)
