"""The gRPC services: thin handlers that read like the protocol.

Authorize: hotpath.plan_authorize (validation and product rules, no I/O) -> one reserve script
call, coalesced with the loop tick's other calls into one Redis round trip -> response.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable

from creditgate import hotpath
from creditgate.gateway import batch, lifecycle
from creditgate.gateway.credit_ops import hold_amount_call, plan_increment, plan_set_raise
from creditgate.gateway.errors import NotFound, unary
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from creditgate.limits import calendar, catalog, installments, keys
from creditgate.limits.client import CustomerState, LimitsClient, decode_authorization
from creditgate.limits.constants import (
    CAP_MINOR_MAX,
    CUSTOMER_CAPS_MAX,
    HOLD_TOKEN_LENGTH,
    NODE_NAME_LENGTH_MAX,
    TZ_DEFAULT,
)
from creditgate.limits.reasons import PARTIAL_APPROVAL_CODE, RESPONSE_CODE, DeclineReason

_HOLD_STATES = {
    "open": pb.HOLD_STATE_OPEN,
    "captured": pb.HOLD_STATE_CAPTURED,
    "voided": pb.HOLD_STATE_VOIDED,
    "expired": pb.HOLD_STATE_EXPIRED,
    "reversed": pb.HOLD_STATE_REVERSED,
}
_REVERSE_OUTCOMES = {
    "released": pb.REVERSE_OUTCOME_RELEASED,
    "already_closed": pb.REVERSE_OUTCOME_ALREADY_CLOSED,
    "original_declined": pb.REVERSE_OUTCOME_ORIGINAL_DECLINED,
    "tombstoned": pb.REVERSE_OUTCOME_TOMBSTONED,
}
_STATUS_NAMES = {
    pb.CUSTOMER_STATUS_ACTIVE: "active",
    pb.CUSTOMER_STATUS_FROZEN: "frozen",
    pb.CUSTOMER_STATUS_CLOSED: "closed",
    pb.CUSTOMER_STATUS_OVERDUE: "overdue",
}
_STATUS_NUMBERS = {name: number for number, name in _STATUS_NAMES.items()}


def random_token() -> str:
    """The random part of a hold id: 80 bits as 16 base32 characters."""
    return base64.b32encode(os.urandom(HOLD_TOKEN_LENGTH * 5 // 8)).decode()


class Context:
    """What the services share: the limit client, the catalog and the injected randomness."""

    def __init__(self, limits: LimitsClient, products: dict[str, catalog.Product],
                 token_source: Callable[[], str] = random_token):
        self.limits = limits
        self.products = products
        self.rules = hotpath.compile_products(products)
        self.partitions = limits.partitions
        self.token_source = token_source


def _levels(levels) -> list[pb.LevelHeadroom]:
    return [pb.LevelHeadroom(node=level.node, cap_minor=level.cap_minor,
                             held_minor=level.held_minor, used_minor=level.used_minor,
                             available_minor=level.available_minor,
                             raise_minor=level.raise_minor,
                             raise_expires_at_ms=level.raise_expires_at_ms) for level in levels]


def plan_refund(request: pb.RefundRequest, partitions: int) -> tuple[list[str], list[str]]:
    """Validate a RefundRequest and build the refund script's (keys, args), as the hot path
    does for Capture and Void (refunds are rare: no compiled twin)."""
    base, amount = hold_amount_call(request, partitions)
    return ([keys.hold(base, request.hold_id),
             keys.idempotency_refund(base, request.hold_id, request.idempotency_key),
             keys.outbox(base)],
            [base, request.hold_id, hotpath.fingerprint("refund", amount), amount])


def _plan(plan: installments.Plan, into: pb.InstallmentPlan) -> None:
    into.months = plan.months
    into.principal_minor = plan.principal_minor
    into.first_instalment_minor = plan.first_instalment_minor
    into.instalment_minor = plan.instalment_minor
    into.fee_per_instalment_minor = plan.fee_per_instalment_minor
    into.fee_total_minor = plan.fee_total_minor
    into.monthly_fee_bps = plan.monthly_fee_bps


def authorization_response(result, product: catalog.Product | None = None,
                           response: pb.AuthorizeResponse | None = None
                           ) -> pb.AuthorizeResponse:
    """The AuthorizeResponse of a reserve script's decoded reply, written into `response` if
    given (AuthorizeBatch writes each item's in place). With the product, a counter-offer lists
    the plan of every term the product offers for the offered amount."""
    # Fields are set in place, levels and plans added in place: building messages apart and
    # copying them in (levels=[...], CopyFrom) cost ~3 µs more per authorization.
    if response is None:
        response = pb.AuthorizeResponse()
    reason = result.reason
    response.approved = reason == DeclineReason.NONE
    response.decline_reason = reason
    response.response_code = PARTIAL_APPROVAL_CODE if result.partial else RESPONSE_CODE[reason]
    response.decline_level = result.level
    response.hold_id = result.hold_id
    response.available_minor = result.available_minor
    add_level = response.levels.add
    for level in result.levels:
        # A reserve reply's levels carry no temporary raise (limits.client.Level).
        add_level(node=level.node, cap_minor=level.cap_minor, held_minor=level.held_minor,
                  used_minor=level.used_minor, available_minor=level.available_minor)
    response.hold_expires_at_ms = result.hold_expires_at_ms
    response.decided_at_ms = result.decided_at_ms
    response.partial = result.partial
    response.approved_amount_minor = result.approved_amount_minor
    response.counter_offer_minor = result.counter_offer_minor
    response.counter_offer_level = result.counter_offer_level
    if result.plan is not None:
        _plan(result.plan, response.installment_plan)
    if result.counter_offer_minor > 0 and product is not None:
        terms = product.installments
        for months in sorted(terms.months):
            _plan(installments.plan(result.counter_offer_minor, months, terms.monthly_fee_bps),
                  response.counter_offer_plans.add())
    return response


def reserve(c: Context, request: pb.AuthorizeRequest) -> Awaitable:
    """The first half of an authorization, done at once: the hot path's plan, and its reserve
    script call queued for this loop tick's round trip. The awaitable resolves to the script's
    reply, which `answer` turns into the response. Raises InvalidArgument as the hot path does."""
    keys_, args = hotpath.plan_authorize(request, c.rules, c.partitions)
    return c.limits.reserve(keys_, args)


def answer(c: Context, request: pb.AuthorizeRequest, reply,
           response: pb.AuthorizeResponse | None = None) -> pb.AuthorizeResponse:
    """The second half: the response of the reserve script's reply (Refused if it refused),
    written into `response` if given."""
    return authorization_response(decode_authorization(reply),
                                  c.products.get(request.product_id), response)


async def authorize(c: Context, request: pb.AuthorizeRequest) -> pb.AuthorizeResponse:
    """One authorization: the hot path's plan, one reserve script call (coalesced with the
    loop tick's other calls into one Redis round trip), the response. Raises as the handlers
    do (InvalidArgument, Refused, Redis errors); AuthorizeBatch runs the same two halves per
    item."""
    return answer(c, request, await reserve(c, request))


class AuthorizationService(pb_grpc.AuthorizationServicer):
    def __init__(self, context: Context):
        self.c = context

    @unary
    async def Authorize(self, request: pb.AuthorizeRequest, context) -> pb.AuthorizeResponse:
        return await authorize(self.c, request)

    @unary
    async def AuthorizeBatch(self, request: pb.AuthorizeBatchRequest,
                             context) -> pb.AuthorizeBatchResponse:
        return await batch.authorize_batch(self.c, request)

    @unary
    async def Capture(self, request: pb.CaptureRequest, context) -> pb.CaptureResponse:
        keys_, args = hotpath.plan_capture(request, self.c.partitions)
        result = await self.c.limits.capture(keys_, args)
        return pb.CaptureResponse(
            hold_id=request.hold_id,
            state=_HOLD_STATES[result.state],
            captured_minor=result.captured_minor,
            captured_total_minor=result.captured_total_minor,
            released_minor=result.released_minor,
            held_minor=result.held_minor,
            decided_at_ms=result.decided_at_ms,
            over_captured_minor=result.over_captured_minor,
        )

    @unary
    async def Void(self, request: pb.VoidRequest, context) -> pb.VoidResponse:
        keys_, args = hotpath.plan_void(request, self.c.partitions)
        result = await self.c.limits.void(keys_, args)
        return pb.VoidResponse(
            hold_id=request.hold_id,
            state=_HOLD_STATES[result.state],
            released_minor=result.released_minor,
            captured_total_minor=result.captured_total_minor,
            decided_at_ms=result.decided_at_ms,
        )

    @unary
    async def Refund(self, request: pb.RefundRequest, context) -> pb.RefundResponse:
        result = await self.c.limits.refund(*plan_refund(request, self.c.partitions))
        return pb.RefundResponse(
            hold_id=request.hold_id,
            refunded_minor=result.refunded_minor,
            refunded_total_minor=result.refunded_total_minor,
            refundable_minor=result.refundable_minor,
            decided_at_ms=result.decided_at_ms,
        )

    @unary
    async def Reverse(self, request: pb.ReverseRequest, context) -> pb.ReverseResponse:
        result = await self.c.limits.reverse(*lifecycle.plan_reverse(request, self.c.partitions))
        return pb.ReverseResponse(
            outcome=_REVERSE_OUTCOMES[result.outcome],
            hold_id=result.hold_id,
            released_minor=result.released_minor,
            decided_at_ms=result.decided_at_ms,
        )

    @unary
    async def ForceCapture(self, request: pb.ForceCaptureRequest,
                           context) -> pb.ForceCaptureResponse:
        result = await self.c.limits.force_capture(*lifecycle.plan_force_capture(
            request, self.c.products, self.c.partitions, self.c.token_source()))
        return pb.ForceCaptureResponse(
            hold_id=result.hold_id,
            over_limit=bool(result.over_limit_levels),
            over_limit_levels=result.over_limit_levels,
            levels=_levels(result.levels),
            decided_at_ms=result.decided_at_ms,
        )

    @unary
    async def IncrementAuthorization(self, request: pb.IncrementAuthorizationRequest,
                                     context) -> pb.IncrementAuthorizationResponse:
        result = await self.c.limits.increment(*plan_increment(request, self.c.partitions))
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
            levels=_levels(a.levels),
            decided_at_ms=a.decided_at_ms,
            counter_offer_minor=a.counter_offer_minor,
            counter_offer_level=a.counter_offer_level,
        )

    @unary
    async def GetCredit(self, request: pb.GetCreditRequest, context) -> pb.GetCreditResponse:
        hotpath.check_id("customer_id", request.customer_id)
        product = None
        if request.product_id:
            product = self.c.products.get(request.product_id)
            if product is None:
                raise hotpath.InvalidArgument("product_id",
                                              f"unknown product {request.product_id!r}")
        state = await _customer(self.c.limits, request.customer_id)
        response = pb.GetCreditResponse(
            customer_id=state.customer_id,
            status=_STATUS_NUMBERS.get(state.status, pb.CUSTOMER_STATUS_UNSPECIFIED),
            levels=_levels(state.levels()),
            as_of_ms=state.as_of_ms,
            outstanding_minor=state.outstanding_minor,
            credit_balance_minor=state.credit_balance_minor,
        )
        products = [product] if product else [self.c.products[p] for p in
                                              sorted(set(state.day) | set(state.month))
                                              if p in self.c.products]
        for item in products:
            for period, windows, reset in (("day", state.day, state.day_resets_at_ms),
                                           ("month", state.month, state.month_resets_at_ms)):
                rule = getattr(item.velocity, period)
                window = windows.get(item.id)
                response.velocity.append(pb.VelocityWindow(
                    product_id=item.id, period=period,
                    amount_minor=window.amount_minor if window else 0,
                    count=window.count if window else 0,
                    amount_max_minor=rule.amount_max_minor, count_max=rule.count_max,
                    resets_at_ms=reset))
        if product:
            response.available_minor = min(state.level(node).available_minor
                                           for node in product.nodes)
        return response


class AdminService(pb_grpc.AdminServicer):
    def __init__(self, context: Context):
        self.c = context

    @unary
    async def PutCustomer(self, request: pb.PutCustomerRequest, context) -> pb.Customer:
        hotpath.check_id("customer_id", request.customer_id)
        status = _STATUS_NAMES.get(request.status)
        if status is None:
            raise hotpath.InvalidArgument("status",
                                          "required: ACTIVE, FROZEN, CLOSED or OVERDUE")
        timezone = request.timezone or TZ_DEFAULT
        try:
            calendar.zone(timezone)
        except calendar.UnknownTimezone:
            raise hotpath.InvalidArgument("timezone", "unknown IANA timezone") from None
        if len(request.caps_minor) > CUSTOMER_CAPS_MAX:
            raise hotpath.InvalidArgument("caps_minor", f"at most {CUSTOMER_CAPS_MAX} caps")
        for node, cap in request.caps_minor.items():
            if not catalog.NODE_NAME.match(node) or len(node) > NODE_NAME_LENGTH_MAX:
                raise hotpath.InvalidArgument(
                    "caps_minor", f"bad node name {node[:NODE_NAME_LENGTH_MAX]!r}: dotted "
                    f"lower-case words, at most {NODE_NAME_LENGTH_MAX} characters")
            if not 0 <= cap <= CAP_MINOR_MAX:
                raise hotpath.InvalidArgument(
                    "caps_minor", f"cap of {node!r} must be within 0..{CAP_MINOR_MAX}")
        await self.c.limits.put_customer(request.customer_id, status, timezone,
                                         dict(request.caps_minor))
        return pb.Customer(customer_id=request.customer_id, status=request.status,
                           timezone=timezone, caps_minor=dict(request.caps_minor))

    @unary
    async def SetTemporaryRaise(self, request: pb.SetTemporaryRaiseRequest,
                                context) -> pb.SetTemporaryRaiseResponse:
        plan = plan_set_raise(request)
        result = await self.c.limits.set_raise(plan.customer_id, plan.node, plan.raise_minor,
                                               plan.expires_at_ms)
        return pb.SetTemporaryRaiseResponse(level=_levels([result.level])[0],
                                            decided_at_ms=result.decided_at_ms)

    @unary
    async def Repay(self, request: pb.RepayRequest, context) -> pb.RepayResponse:
        order = lifecycle.repayment_order(self.c.products)
        result = await self.c.limits.repay(*lifecycle.plan_repay(request, order,
                                                                  self.c.partitions))
        return pb.RepayResponse(
            customer_id=request.customer_id,
            repaid_minor=result.repaid_minor,
            allocations=[pb.RepaymentAllocation(path=path, amount_minor=amount)
                         for path, amount in result.allocations],
            overpaid_minor=result.overpaid_minor,
            outstanding_minor=result.outstanding_minor,
            decided_at_ms=result.decided_at_ms,
        )

    @unary
    async def GetCustomer(self, request: pb.GetCustomerRequest, context) -> pb.Customer:
        hotpath.check_id("customer_id", request.customer_id)
        state = await _customer(self.c.limits, request.customer_id)
        return pb.Customer(customer_id=state.customer_id,
                           status=_STATUS_NUMBERS.get(state.status,
                                                      pb.CUSTOMER_STATUS_UNSPECIFIED),
                           timezone=state.timezone, caps_minor=state.caps)


async def _customer(limits: LimitsClient, customer_id: str) -> CustomerState:
    state = await limits.credit(customer_id)
    if state is None:
        raise NotFound("customer_id: unknown customer")
    return state
