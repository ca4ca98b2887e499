"""The gRPC services: thin handlers that read like the protocol. Each validates and plans
through the hot path (hotpath, hotpath/plans.py), runs one script through the limit client and
builds its response (gateway/responses.py); gateway/errors.py turns failures into statuses.
The admin changes (PutCustomer, SetTemporaryRaise, Repay) also write one line each to the
audit log "creditgate.audit": caller, customer, before and after, ids and amounts only.
"""

from __future__ import annotations

import json
import logging

from creditgate import hotpath
from creditgate.gateway import authorize
from creditgate.gateway.context import Context
from creditgate.gateway.errors import NotFound
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.gateway.responses import (
    HOLD_STATES,
    REVERSE_OUTCOMES,
    STATUS_NAMES,
    STATUS_NUMBERS,
    credit_response,
    levels,
)
from creditgate.hotpath import plans
from creditgate.limits.client import CALLER, LimitsClient
from creditgate.limits.reasons import RESPONSE_CODE
from creditgate.limits.replies import CustomerState

audit_log = logging.getLogger("creditgate.audit")


def audit(action: str, customer_id: str, before: dict, after: dict, **facts) -> None:
    """One audit line, a JSON object: the change, who made it (the caller's name), the
    customer, what was there before (from the script's own reply, read in the same atomic
    step as the change) and after. No personal data: ids, statuses and amounts only."""
    record = {"action": action, "caller": CALLER.get()[0], "customer_id": customer_id,
              "before": before, "after": after, **facts}
    audit_log.info("%s", json.dumps(record, sort_keys=True, separators=(",", ":")))


class AuthorizationService(pb_grpc.AuthorizationServicer):
    def __init__(self, context: Context):
        self.c = context

    async def Authorize(self, request: pb.AuthorizeRequest, context) -> pb.AuthorizeResponse:
        return await authorize.authorize(self.c, request)

    async def AuthorizeBatch(self, request: pb.AuthorizeBatchRequest,
                             context) -> pb.AuthorizeBatchResponse:
        return await authorize.authorize_batch(self.c, request)

    async def Capture(self, request: pb.CaptureRequest, context) -> pb.CaptureResponse:
        keys_, args = hotpath.plan_capture(request, self.c.partitions)
        result = await self.c.limits.capture(keys_, args)
        return pb.CaptureResponse(
            hold_id=request.hold_id,
            state=HOLD_STATES[result.state],
            captured_minor=result.captured_minor,
            captured_total_minor=result.captured_total_minor,
            released_minor=result.released_minor,
            held_minor=result.held_minor,
            decided_at_ms=result.decided_at_ms,
            over_captured_minor=result.over_captured_minor,
        )

    async def Void(self, request: pb.VoidRequest, context) -> pb.VoidResponse:
        keys_, args = hotpath.plan_void(request, self.c.partitions)
        result = await self.c.limits.void(keys_, args)
        return pb.VoidResponse(
            hold_id=request.hold_id,
            state=HOLD_STATES[result.state],
            released_minor=result.released_minor,
            captured_total_minor=result.captured_total_minor,
            decided_at_ms=result.decided_at_ms,
        )

    async def Refund(self, request: pb.RefundRequest, context) -> pb.RefundResponse:
        result = await self.c.limits.refund(*plans.plan_refund(request, self.c.partitions))
        return pb.RefundResponse(
            hold_id=request.hold_id,
            refunded_minor=result.refunded_minor,
            refunded_total_minor=result.refunded_total_minor,
            refundable_minor=result.refundable_minor,
            decided_at_ms=result.decided_at_ms,
        )

    async def Reverse(self, request: pb.ReverseRequest, context) -> pb.ReverseResponse:
        result = await self.c.limits.reverse(*plans.plan_reverse(request, self.c.partitions))
        return pb.ReverseResponse(
            outcome=REVERSE_OUTCOMES[result.outcome],
            hold_id=result.hold_id,
            released_minor=result.released_minor,
            decided_at_ms=result.decided_at_ms,
        )

    async def ForceCapture(self, request: pb.ForceCaptureRequest,
                           context) -> pb.ForceCaptureResponse:
        result = await self.c.limits.force_capture(*plans.plan_force_capture(
            request, self.c.catalog.products, self.c.partitions, self.c.token_source()))
        return pb.ForceCaptureResponse(
            hold_id=result.hold_id,
            over_limit=bool(result.over_limit_levels),
            over_limit_levels=result.over_limit_levels,
            levels=levels(result.levels),
            decided_at_ms=result.decided_at_ms,
        )

    async def IncrementAuthorization(self, request: pb.IncrementAuthorizationRequest,
                                     context) -> pb.IncrementAuthorizationResponse:
        result = await self.c.limits.increment(*plans.plan_increment(request, self.c.partitions))
        a = result.authorization
        return pb.IncrementAuthorizationResponse(
            approved=a.approved,
            decline_reason=int(a.reason),
            response_code=RESPONSE_CODE[a.reason],
            decline_level=a.level,
            hold_id=a.hold_id,
            amount_total_minor=a.approved_amount_minor,
            held_minor=result.held_minor,
            available_minor=a.available_minor,
            levels=levels(a.levels),
            decided_at_ms=a.decided_at_ms,
            counter_offer_minor=a.counter_offer_minor,
            counter_offer_level=a.counter_offer_level,
        )

    async def GetCredit(self, request: pb.GetCreditRequest, context) -> pb.GetCreditResponse:
        hotpath.check_id("customer_id", request.customer_id)
        products = self.c.catalog.products
        product = None
        if request.product_id:
            product = products.get(request.product_id)
            if product is None:
                raise hotpath.InvalidArgument("product_id",
                                              f"unknown product {request.product_id!r}")
        state = await _customer(self.c.limits, request.customer_id)
        return credit_response(state, products, product)


class AdminService(pb_grpc.AdminServicer):
    def __init__(self, context: Context):
        self.c = context

    async def PutCustomer(self, request: pb.PutCustomerRequest, context) -> pb.Customer:
        status = STATUS_NAMES.get(request.status)
        timezone, caps = plans.check_put_customer(request, status)
        result = await self.c.limits.put_customer(request.customer_id, status, timezone, caps)
        audit("put_customer", request.customer_id,
              {"status": result.status_before, "caps_minor": result.caps_before},
              {"status": status, "caps_minor": caps}, decided_at_ms=result.decided_at_ms)
        return pb.Customer(customer_id=request.customer_id, status=request.status,
                           timezone=timezone, caps_minor=caps)

    async def SetTemporaryRaise(self, request: pb.SetTemporaryRaiseRequest,
                                context) -> pb.SetTemporaryRaiseResponse:
        change = plans.check_set_raise(request)
        result = await self.c.limits.set_raise(change.customer_id, change.node,
                                               change.raise_minor, change.expires_at_ms)
        audit("set_temporary_raise", change.customer_id,
              {"raise_minor": result.raise_before_minor,
               "expires_at_ms": result.raise_before_expires_at_ms},
              {"raise_minor": result.level.raise_minor,
               "expires_at_ms": result.level.raise_expires_at_ms},
              node=change.node, decided_at_ms=result.decided_at_ms)
        return pb.SetTemporaryRaiseResponse(level=levels([result.level])[0],
                                            decided_at_ms=result.decided_at_ms)

    async def Repay(self, request: pb.RepayRequest, context) -> pb.RepayResponse:
        result = await self.c.limits.repay(*plans.plan_repay(
            request, self.c.catalog.repayment_order, self.c.partitions))
        # What was owed before is what is owed after plus what this repayment paid off (a
        # retry answers the first repayment's figures again).
        audit("repay", request.customer_id,
              {"outstanding_minor": result.outstanding_minor + result.repaid_minor},
              {"outstanding_minor": result.outstanding_minor},
              amount_minor=request.amount_minor, repaid_minor=result.repaid_minor,
              overpaid_minor=result.overpaid_minor, idempotency_key=request.idempotency_key,
              decided_at_ms=result.decided_at_ms)
        return pb.RepayResponse(
            customer_id=request.customer_id,
            repaid_minor=result.repaid_minor,
            allocations=[pb.RepaymentAllocation(path=path, amount_minor=amount)
                         for path, amount in result.allocations],
            overpaid_minor=result.overpaid_minor,
            outstanding_minor=result.outstanding_minor,
            decided_at_ms=result.decided_at_ms,
        )

    async def GetCustomer(self, request: pb.GetCustomerRequest, context) -> pb.Customer:
        hotpath.check_id("customer_id", request.customer_id)
        state = await _customer(self.c.limits, request.customer_id)
        return pb.Customer(customer_id=state.customer_id,
                           status=STATUS_NUMBERS.get(state.status,
                                                      pb.CUSTOMER_STATUS_UNSPECIFIED),
                           timezone=state.timezone, caps_minor=state.caps)


async def _customer(limits: LimitsClient, customer_id: str) -> CustomerState:
    state = await limits.credit(customer_id)
    if state is None:
        raise NotFound("customer_id: unknown customer")
    return state
