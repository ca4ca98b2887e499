"""Plans of the lifecycle operations after authorization that the hot path does not cover:
Reverse, ForceCapture and Repay. Each validates its request (bad input raises InvalidArgument
naming the field, before any Redis trip) and builds its script's (keys, args) exactly as
docs/lifecycle.md lays them out. They are rare next to Authorize: no compiled twin.
"""

from __future__ import annotations

from creditgate import hotpath
from creditgate.limits import catalog, keys
from creditgate.limits.constants import REPAY_PATHS_MAX


def _customer_base(customer_id: str, partitions: int) -> tuple[int, str]:
    partition = keys.partition_of(customer_id, partitions)
    return partition, keys.base(partition)


def plan_reverse(request, partitions: int) -> tuple[list[str], list[str]]:
    """A ReverseRequest's reverse.lua (keys, args). A reversal is keyed by the original
    Authorize's idempotency key, scoped to the customer like the original."""
    hotpath.check_id("customer_id", request.customer_id)
    hotpath.check_id("original_idempotency_key", request.original_idempotency_key)
    customer_id, original_key = request.customer_id, request.original_idempotency_key
    _, base = _customer_base(customer_id, partitions)
    return ([keys.customer(base, customer_id), keys.customer_holds(base, customer_id),
             keys.due(base), keys.outbox(base),
             keys.idempotency_authorize(base, customer_id, original_key),
             keys.reversal(base, customer_id, original_key)],
            [base, customer_id, original_key])


def plan_force_capture(request, products: dict[str, catalog.Product], partitions: int,
                       token: str) -> tuple[list[str], list[str]]:
    """A ForceCaptureRequest's force_capture.lua (keys, args); `token` makes the new hold's id.

    The fields are checked as Authorize checks them, in the order of the proto. The product's
    rules on channel, MCC and amount are not applied: the network already settled the
    purchase, which must be posted. The path is the product's nodes plus the channel's node,
    if the product has one for that channel."""
    hotpath.check_id("idempotency_key", request.idempotency_key)
    hotpath.check_id("customer_id", request.customer_id)
    hotpath.check_id("product_id", request.product_id)
    product = products.get(request.product_id)
    if product is None:
        raise hotpath.InvalidArgument("product_id", f"unknown product {request.product_id!r}")
    if request.channel == 0:
        raise hotpath.InvalidArgument("channel", "required")
    if not 0 < request.channel < len(hotpath.CHANNEL_NAMES):
        raise hotpath.InvalidArgument("channel", f"unknown channel {request.channel}")
    channel = hotpath.CHANNEL_NAMES[request.channel]
    hotpath.check_id("merchant_id", request.merchant_id)
    mcc = request.mcc
    if len(mcc) != 4 or not mcc.isascii() or not mcc.isdigit():
        raise hotpath.InvalidArgument("mcc", "must be four digits (ISO 18245)")
    hotpath.check_amount("amount_minor", request.amount_minor)
    currency = request.currency
    if not currency:
        raise hotpath.InvalidArgument("currency", "required")
    if currency not in catalog.CURRENCIES:
        raise hotpath.InvalidArgument("currency", "unknown currency (ISO 4217 code expected)")
    if currency != product.currency:
        raise hotpath.InvalidArgument("currency",
                                      f"product {product.id!r} is in {product.currency}")
    partition, base = _customer_base(request.customer_id, partitions)
    original = request.original_hold_id
    if original:
        hotpath.check_id("original_hold_id", original)
        if keys.partition_of_hold(original, partitions) is None:
            raise hotpath.InvalidArgument("original_hold_id",
                                          "not a hold id issued by this gateway")
        if keys.partition_of_hold(original, partitions) != partition:
            raise hotpath.InvalidArgument("original_hold_id",
                                          "not a hold of this customer")
    hold_id = keys.hold_id(partition, token)
    hold_key = keys.hold(base, hold_id)
    amount = str(request.amount_minor)
    payload = (product.id, channel, request.merchant_id, mcc, amount, currency, original)
    return ([keys.customer(base, request.customer_id),
             keys.idempotency_force_capture(base, request.customer_id, request.idempotency_key),
             keys.outbox(base), hold_key, keys.hold(base, original) if original else hold_key,
             keys.customer_holds(base, request.customer_id), keys.due(base)],
            [base, request.customer_id, hold_id, hotpath.fingerprint("force_capture", *payload),
             product.id, amount, request.merchant_id, mcc, channel, currency, original,
             *product.nodes_for(channel)])


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


def plan_repay(request, order: tuple[str, ...],
               partitions: int) -> tuple[list[str], list[str]]:
    """A RepayRequest's repay.lua (keys, args); `order` is repayment_order(catalog)."""
    hotpath.check_id("idempotency_key", request.idempotency_key)
    hotpath.check_id("customer_id", request.customer_id)
    hotpath.check_amount("amount_minor", request.amount_minor)
    customer_id = request.customer_id
    _, base = _customer_base(customer_id, partitions)
    amount = str(request.amount_minor)
    return ([keys.customer(base, customer_id),
             keys.idempotency_repay(base, customer_id, request.idempotency_key),
             keys.outbox(base)],
            [base, customer_id, hotpath.fingerprint("repay", amount), amount, *order])
