"""Responses of the public contract built from the limit scripts' decoded replies."""

from __future__ import annotations

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits import catalog, installments
from creditgate.limits.reasons import PARTIAL_APPROVAL_CODE, RESPONSE_CODE, DeclineReason
from creditgate.limits.replies import CustomerState

HOLD_STATES = {
    "open": pb.HOLD_STATE_OPEN,
    "captured": pb.HOLD_STATE_CAPTURED,
    "voided": pb.HOLD_STATE_VOIDED,
    "expired": pb.HOLD_STATE_EXPIRED,
    "reversed": pb.HOLD_STATE_REVERSED,
}
REVERSE_OUTCOMES = {
    "released": pb.REVERSE_OUTCOME_RELEASED,
    "already_closed": pb.REVERSE_OUTCOME_ALREADY_CLOSED,
    "original_declined": pb.REVERSE_OUTCOME_ORIGINAL_DECLINED,
    "tombstoned": pb.REVERSE_OUTCOME_TOMBSTONED,
}
STATUS_NAMES = {
    pb.CUSTOMER_STATUS_ACTIVE: "active",
    pb.CUSTOMER_STATUS_FROZEN: "frozen",
    pb.CUSTOMER_STATUS_CLOSED: "closed",
    pb.CUSTOMER_STATUS_OVERDUE: "overdue",
}
STATUS_NUMBERS = {name: number for number, name in STATUS_NAMES.items()}


def levels(levels) -> list[pb.LevelHeadroom]:
    return [pb.LevelHeadroom(node=level.node, cap_minor=level.cap_minor,
                             held_minor=level.held_minor, used_minor=level.used_minor,
                             available_minor=level.available_minor,
                             raise_minor=level.raise_minor,
                             raise_expires_at_ms=level.raise_expires_at_ms) for level in levels]


def installment_plan(plan: installments.Plan, into: pb.InstallmentPlan) -> None:
    into.months = plan.months
    into.principal_minor = plan.principal_minor
    into.first_installment_minor = plan.first_installment_minor
    into.installment_minor = plan.installment_minor
    into.fee_per_installment_minor = plan.fee_per_installment_minor
    into.fee_total_minor = plan.fee_total_minor
    into.monthly_fee_bps = plan.monthly_fee_bps


def authorization_response(result, product: catalog.Product | None = None,
                           response: pb.AuthorizeResponse | None = None
                           ) -> pb.AuthorizeResponse:
    """The AuthorizeResponse of a reserve script's decoded reply, written into `response` if
    given (AuthorizeBatch writes each item's in place). With the product, a counter-offer lists
    the plan of every term the product offers for the offered amount."""
    # Fields are set in place, levels and plans added in place: building messages apart and
    # copying them in (levels=[...], CopyFrom) costs more per authorization (docs/benchmarks.md).
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
        # A reserve reply's levels carry no temporary raise (limits.replies.Level).
        add_level(node=level.node, cap_minor=level.cap_minor, held_minor=level.held_minor,
                  used_minor=level.used_minor, available_minor=level.available_minor)
    response.hold_expires_at_ms = result.hold_expires_at_ms
    response.decided_at_ms = result.decided_at_ms
    response.partial = result.partial
    response.approved_amount_minor = result.approved_amount_minor
    response.counter_offer_minor = result.counter_offer_minor
    response.counter_offer_level = result.counter_offer_level
    response.catalog_version = result.catalog_version
    if result.plan is not None:
        installment_plan(result.plan, response.installment_plan)
    if result.counter_offer_minor > 0 and product is not None:
        terms = product.installments
        for months in sorted(terms.months):
            offered = installments.plan(result.counter_offer_minor, months, terms.monthly_fee_bps)
            installment_plan(offered, response.counter_offer_plans.add())
    return response


def credit_response(state: CustomerState, products: dict[str, catalog.Product],
                    product: catalog.Product | None) -> pb.GetCreditResponse:
    """GetCredit's answer: every level; the velocity windows of the product asked for, or of
    every product the customer used; with a product, what it may spend now."""
    response = pb.GetCreditResponse(
        customer_id=state.customer_id,
        status=STATUS_NUMBERS.get(state.status, pb.CUSTOMER_STATUS_UNSPECIFIED),
        levels=levels(state.levels()),
        as_of_ms=state.as_of_ms,
        outstanding_minor=state.outstanding_minor,
        credit_balance_minor=state.credit_balance_minor,
    )
    shown = [product] if product else [products[p] for p in
                                       sorted(set(state.day) | set(state.month))
                                       if p in products]
    for item in shown:
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
