"""Plans of the rare operations: Refund, IncrementAuthorization, Reverse, ForceCapture and
Repay. Each validates its request in the order of the proto (bad input raises InvalidArgument
naming the field, before any Redis trip) and builds its script's (keys, args) in the order
limits/contracts.py declares. SetTemporaryRaise and PutCustomer are validated here too; their
calls name a customer, not a hold or a purchase, and limits.client builds them. All are rare
next to Authorize, Capture and Void (hotpath/_plan_py.py and its compiled twin): plain Python,
no twin.
"""

from __future__ import annotations

import msgspec

from creditgate.hotpath import (
    CHANNEL_NAMES,
    InvalidArgument,
    check_amount,
    check_id,
    fingerprint,
)
from creditgate.limits import calendar, catalog, contracts, keys
from creditgate.limits.constants import (
    CAP_MINOR_MAX,
    CUSTOMER_CAPS_MAX,
    NODE_NAME_LENGTH_MAX,
    REPAY_PATHS_MAX,
    TZ_DEFAULT,
)

Plan = tuple[list[str], list[str]]


def _hold_amount_call(request, partitions: int) -> tuple[str, str]:
    """(partition base, amount) of a call that moves an amount on one hold (Refund,
    IncrementAuthorization): its idempotency key, hold id and amount checked in proto order."""
    check_id("idempotency_key", request.idempotency_key)
    check_id("hold_id", request.hold_id)
    partition = keys.partition_of_hold(request.hold_id, partitions)
    if partition is None:
        raise InvalidArgument("hold_id", "not a hold id issued by this gateway")
    check_amount("amount_minor", request.amount_minor)
    return keys.base(partition), str(request.amount_minor)


def plan_refund(request, partitions: int) -> Plan:
    """refund.lua's (keys, args) of a RefundRequest."""
    base, amount = _hold_amount_call(request, partitions)
    hold_id = request.hold_id
    return (contracts.REFUND.keys.pack(
                hold=keys.hold(base, hold_id),
                idempotency=keys.idempotency_refund(base, hold_id, request.idempotency_key),
                outbox=keys.outbox(base)),
            contracts.REFUND.args.pack(base=base, hold_id=hold_id, amount_minor=amount,
                                       fingerprint=fingerprint("refund", amount)))


def plan_increment(request, partitions: int) -> Plan:
    """increment.lua's (keys, args) of an IncrementAuthorizationRequest."""
    base, amount = _hold_amount_call(request, partitions)
    hold_id = request.hold_id
    return (contracts.INCREMENT.keys.pack(
                hold=keys.hold(base, hold_id),
                idempotency=keys.idempotency_increment(base, hold_id, request.idempotency_key),
                due=keys.due(base), outbox=keys.outbox(base)),
            contracts.INCREMENT.args.pack(base=base, hold_id=hold_id, amount_minor=amount,
                                          fingerprint=fingerprint("increment", amount)))


def check_node(field: str, node: str) -> None:
    if not catalog.NODE_NAME.match(node) or len(node) > NODE_NAME_LENGTH_MAX:
        raise InvalidArgument(
            field, f"bad node name {node[:NODE_NAME_LENGTH_MAX]!r}: dotted lower-case words, "
            f"at most {NODE_NAME_LENGTH_MAX} characters")


class RaiseChange(msgspec.Struct, frozen=True):
    customer_id: str
    node: str
    raise_minor: int  # 0 removes the raise
    expires_at_ms: int  # Unix ms; the script checks it against Redis' clock


def check_set_raise(request) -> RaiseChange:
    """A valid SetTemporaryRaiseRequest (limits.client.set_raise builds its call). Whether
    expires_at_ms lies in the future (and not too far) is the script's check: only Redis'
    clock may say what now is."""
    check_id("customer_id", request.customer_id)
    node = request.node
    if not node:
        raise InvalidArgument("node", "required")
    check_node("node", node)
    if not 0 <= request.raise_minor <= CAP_MINOR_MAX:
        raise InvalidArgument(
            "raise_minor", f"must be within 0..{CAP_MINOR_MAX} (integer minor units; 0 removes "
            "the raise)")
    if request.raise_minor > 0 and request.expires_at_ms <= 0:
        raise InvalidArgument("expires_at_ms", "required: when the raise ends (Unix ms)")
    if request.expires_at_ms < 0:
        raise InvalidArgument("expires_at_ms", "must be a Unix time in ms, not negative")
    return RaiseChange(request.customer_id, node, request.raise_minor, request.expires_at_ms)


def check_put_customer(request, status: str | None) -> tuple[str, dict[str, int]]:
    """A valid PutCustomerRequest's (timezone, caps) (limits.client.put_customer builds its
    call); `status` is its status by name (None: not given)."""
    check_id("customer_id", request.customer_id)
    if status is None:
        raise InvalidArgument("status", "required: ACTIVE, FROZEN, CLOSED or OVERDUE")
    timezone = request.timezone or TZ_DEFAULT
    try:
        calendar.zone(timezone)
    except calendar.UnknownTimezone:
        raise InvalidArgument("timezone", "unknown IANA timezone") from None
    caps = dict(request.caps_minor)
    if len(caps) > CUSTOMER_CAPS_MAX:
        raise InvalidArgument("caps_minor", f"at most {CUSTOMER_CAPS_MAX} caps")
    for node, cap in caps.items():
        check_node("caps_minor", node)
        if not 0 <= cap <= CAP_MINOR_MAX:
            raise InvalidArgument("caps_minor", f"cap of {node!r} must be within "
                                  f"0..{CAP_MINOR_MAX}")
    return timezone, caps


def plan_reverse(request, partitions: int) -> Plan:
    """reverse.lua's (keys, args) of a ReverseRequest. A reversal is keyed by the original
    Authorize's idempotency key, scoped to the customer like the original."""
    check_id("customer_id", request.customer_id)
    check_id("original_idempotency_key", request.original_idempotency_key)
    customer_id, original_key = request.customer_id, request.original_idempotency_key
    base = keys.customer_base(customer_id, partitions)
    return (contracts.REVERSE.keys.pack(
                customer=keys.customer(base, customer_id),
                customer_holds=keys.customer_holds(base, customer_id),
                due=keys.due(base), outbox=keys.outbox(base),
                original_idempotency=keys.idempotency_authorize(base, customer_id, original_key),
                reversal=keys.reversal(base, customer_id, original_key)),
            contracts.REVERSE.args.pack(base=base, customer_id=customer_id,
                                        original_idempotency_key=original_key))


def _check_purchase(request, products: dict[str, catalog.Product]) -> catalog.Product:
    """A ForceCaptureRequest's purchase fields, checked as Authorize checks them."""
    check_id("idempotency_key", request.idempotency_key)
    check_id("customer_id", request.customer_id)
    check_id("product_id", request.product_id)
    product = products.get(request.product_id)
    if product is None:
        raise InvalidArgument("product_id", f"unknown product {request.product_id!r}")
    if request.channel == 0:
        raise InvalidArgument("channel", "required")
    if not 0 < request.channel < len(CHANNEL_NAMES):
        raise InvalidArgument("channel", f"unknown channel {request.channel}")
    check_id("merchant_id", request.merchant_id)
    mcc = request.mcc
    if len(mcc) != 4 or not mcc.isascii() or not mcc.isdigit():
        raise InvalidArgument("mcc", "must be four digits (ISO 18245)")
    check_amount("amount_minor", request.amount_minor)
    currency = request.currency
    if not currency:
        raise InvalidArgument("currency", "required")
    if currency not in catalog.CURRENCIES:
        raise InvalidArgument("currency", "unknown currency (ISO 4217 code expected)")
    if currency != product.currency:
        raise InvalidArgument("currency", f"product {product.id!r} is in {product.currency}")
    return product


def _check_original(original: str, partition: int, partitions: int) -> None:
    check_id("original_hold_id", original)
    of_hold = keys.partition_of_hold(original, partitions)
    if of_hold is None:
        raise InvalidArgument("original_hold_id", "not a hold id issued by this gateway")
    if of_hold != partition:
        raise InvalidArgument("original_hold_id", "not a hold of this customer")


def plan_force_capture(request, products: dict[str, catalog.Product], partitions: int,
                       token: str) -> Plan:
    """force_capture.lua's (keys, args) of a ForceCaptureRequest; `token` makes the new hold's
    id. The product's rules on channel, MCC and amount are not applied: the network already
    settled the purchase, which must be posted. The path is the product's nodes plus the
    channel's node, if the product has one for that channel."""
    product = _check_purchase(request, products)
    customer_id = request.customer_id
    partition = keys.partition_of(customer_id, partitions)
    base = keys.base(partition)
    original = request.original_hold_id
    if original:
        _check_original(original, partition, partitions)
    channel = CHANNEL_NAMES[request.channel]
    hold_id = keys.hold_id(partition, token)
    hold_key = keys.hold(base, hold_id)
    amount = str(request.amount_minor)
    payload = (product.id, channel, request.merchant_id, request.mcc, amount,
               request.currency, original)
    return (contracts.FORCE_CAPTURE.keys.pack(
                customer=keys.customer(base, customer_id),
                idempotency=keys.idempotency_force_capture(base, customer_id,
                                                           request.idempotency_key),
                outbox=keys.outbox(base), hold=hold_key,
                original_hold=keys.hold(base, original) if original else hold_key,
                customer_holds=keys.customer_holds(base, customer_id), due=keys.due(base)),
            contracts.FORCE_CAPTURE.args.pack(
                base=base, customer_id=customer_id, hold_id=hold_id,
                fingerprint=fingerprint("force_capture", *payload), product_id=product.id,
                amount_minor=amount, merchant_id=request.merchant_id, mcc=request.mcc,
                channel=channel, currency=request.currency, original_hold_id=original,
                rest=product.nodes_for(channel)))


def repayment_order(products: dict[str, catalog.Product]) -> tuple[str, ...]:
    """Every path of the catalog in the order a repayment pays them: products by
    (repayment_priority, id), each product's channels in catalog order; a path once."""
    order: dict[str, None] = {}
    for product in sorted(products.values(), key=lambda p: (p.repayment_priority, p.id)):
        for channel in catalog.CHANNELS:
            if channel in product.channels:
                order[",".join(product.nodes_for(channel))] = None
    paths = tuple(order)
    # A catalog with more paths than one repayment may walk is a deployment error.
    assert len(paths) <= REPAY_PATHS_MAX, f"{len(paths)} paths > REPAY_PATHS_MAX"
    return paths


def plan_repay(request, order: tuple[str, ...], partitions: int) -> Plan:
    """repay.lua's (keys, args) of a RepayRequest; `order` is repayment_order(catalog)."""
    check_id("idempotency_key", request.idempotency_key)
    check_id("customer_id", request.customer_id)
    check_amount("amount_minor", request.amount_minor)
    customer_id = request.customer_id
    base = keys.customer_base(customer_id, partitions)
    amount = str(request.amount_minor)
    return (contracts.REPAY.keys.pack(
                customer=keys.customer(base, customer_id),
                idempotency=keys.idempotency_repay(base, customer_id, request.idempotency_key),
                outbox=keys.outbox(base)),
            contracts.REPAY.args.pack(base=base, customer_id=customer_id,
                                      fingerprint=fingerprint("repay", amount),
                                      amount_minor=amount, rest=order))
