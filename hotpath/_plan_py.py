"""The per-request CPU work of Authorize, Capture and Void: validate, apply the product's rules,
build the reservation plan. This pure-Python module is the specification; hotpath/_plan_c.pyx
is its compiled twin with the same names, signatures, results and errors.

Bad input raises InvalidArgument naming the field (the gateway answers INVALID_ARGUMENT and
nothing is reserved). A product-rule decline is a value (a DeclineReason number) carried in the
plan: the reserve script places it in the documented order after the customer's existence and
status, and records it for idempotency.
"""

from __future__ import annotations

import hashlib

from creditgate.limits import contracts, keys
from creditgate.limits.catalog import CURRENCIES, Product, effective_ms, hours_text
from creditgate.limits.constants import AMOUNT_MINOR_MAX, ID_LENGTH_MAX, INSTALLMENT_MONTHS_MAX
from creditgate.limits.reasons import DeclineReason

# creditgate.v1.Channel numbers -> catalog channel names.
CHANNEL_NAMES = ("", "qr_scan", "pos", "ecommerce", "cash")
# Ids are printable ASCII without space, '{', '|' or '}': 0x21..0x7A and '~'.
_ID_CHARACTERS = frozenset(chr(c) for c in range(0x21, 0x7B)) | {"~"}
_DIGITS = frozenset("0123456789")
# The scripts' KEYS and args by name (limits/contracts.py): a plan fills each slot at its
# declared index.
RESERVE, CAPTURE, VOID = contracts.RESERVE, contracts.CAPTURE, contracts.VOID


class InvalidArgument(ValueError):
    """Caller misuse: the message starts with the field's name."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class ProductRules:
    """One catalog product, prepared once at start-up for the per-request checks."""

    def __init__(self, product: Product,
                 catalog_version: str = contracts.CATALOG_VERSION_NONE):
        self.product_id = product.id
        self.currency = product.currency
        self.amount_min_minor = product.amount_min_minor
        self.amount_max_minor = product.amount_max_minor
        self.channels = frozenset(product.channels)
        self.mcc_allow = frozenset(product.mcc_allow)
        self.mcc_deny = frozenset(product.mcc_deny)
        # The merchant lists: exact ids, and the prefixes of the entries ending in '*'.
        self.merchants_allow = frozenset(m for m in product.merchants_allow if m[-1] != "*")
        self.merchants_deny = frozenset(m for m in product.merchants_deny if m[-1] != "*")
        self.merchant_allow_prefixes = tuple(m[:-1] for m in product.merchants_allow
                                             if m[-1] == "*")
        self.merchant_deny_prefixes = tuple(m[:-1] for m in product.merchants_deny
                                            if m[-1] == "*")
        self.merchant_allow_listed = bool(product.merchants_allow)
        self.merchant_lists = bool(product.merchants_allow or product.merchants_deny)
        # (min, max) on each channel that has bounds of its own (channel_bounds).
        self.bounds_by_channel = {
            channel: channel_amounts(product, channel) for channel in product.channel_bounds
        }
        self.nodes_by_channel = {
            channel: product.nodes_for(channel) for channel in CHANNEL_NAMES[1:]
        }
        self.partial_approval = bool(product.partial_approval)
        self.installment_months = tuple(product.installments.months)
        self.installment_terms = _terms_text(product.id, self.installment_months)
        # The reserve script's `rules` on each channel (limits/contracts.PRODUCT_RULES).
        self.rules_by_channel = {
            channel: product_rules_text(product, channel, nodes, catalog_version)
            for channel, nodes in self.nodes_by_channel.items()
        }


def product_rules_text(product: Product, channel: str, nodes,
                       catalog_version: str = contracts.CATALOG_VERSION_NONE) -> str:
    """A product's rules on one channel as the reserve script takes them in one argument; the
    catalog's version (limits/catalog.VERSION: no separator of the text) goes with them."""
    velocity = product.velocity
    amount_min, amount_max = channel_amounts(product, channel)
    effective_from, effective_until = effective_ms(product)
    return contracts.RULES_SEPARATOR.join(str(value) for value in contracts.PRODUCT_RULES.pack(
        product_id=product.id, channel=channel, currency=product.currency,
        hold_ttl_ms=product.hold_ttl_s * 1000,
        day_amount_max_minor=velocity.day.amount_max_minor,
        day_count_max=velocity.day.count_max,
        month_amount_max_minor=velocity.month.amount_max_minor,
        month_count_max=velocity.month.count_max,
        amount_min_minor=amount_min, amount_max_minor=amount_max,
        capture_tolerance_bps=product.capture_tolerance_bps,
        incremental=1 if product.incremental else 0,
        installment_fee_bps=product.installments.monthly_fee_bps,
        effective_from_ms=effective_from, effective_until_ms=effective_until,
        allowed_hours=hours_text(product),
        first_purchase_max_minor=product.first_purchase_max_minor,
        catalog_version=catalog_version, nodes=contracts.NODES_SEPARATOR.join(nodes)))


def channel_amounts(product: Product, channel: str) -> tuple[int, int]:
    """The per-transaction (min, max) on a channel: its channel_bounds, 0 being the
    product's."""
    bounds = product.channel_bounds.get(channel)  # type: ignore[call-overload]
    if bounds is None:
        return product.amount_min_minor, product.amount_max_minor
    return (bounds.amount_min_minor or product.amount_min_minor,
            bounds.amount_max_minor or product.amount_max_minor)


def _terms_text(product_id: str, months: tuple[int, ...]) -> str:
    """What installment_months may be for the product, for the InvalidArgument message."""
    if not months:
        return f"product {product_id!r} offers no installments"
    terms = [str(term) for term in sorted(months)]
    listed = terms[0] if len(terms) == 1 else ", ".join(terms[:-1]) + " or " + terms[-1]
    return f"product {product_id!r} offers {listed} months"


def compile_products(products: dict[str, Product],
                     catalog_version: str = contracts.CATALOG_VERSION_NONE
                     ) -> dict[str, ProductRules]:
    """The rules of every product of one catalog (its version: every hold they approve and
    every decline records it; CATALOG_VERSION_NONE for products without a catalog)."""
    return {product_id: ProductRules(product, catalog_version)
            for product_id, product in products.items()}


def check_id(field: str, value: str) -> None:
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > ID_LENGTH_MAX:
        raise InvalidArgument(field, f"must be at most {ID_LENGTH_MAX} characters")
    for character in value:
        if character not in _ID_CHARACTERS:
            raise InvalidArgument(
                field, "must be printable ASCII without spaces, '{', '}' or '|'"
            )


def check_amount(field: str, amount_minor: int) -> None:
    if amount_minor <= 0:
        raise InvalidArgument(field, "must be greater than 0 (integer minor units)")
    if amount_minor > AMOUNT_MINOR_MAX:
        raise InvalidArgument(field, f"must be at most {AMOUNT_MINOR_MAX}")


def product_decline(rules: ProductRules, channel: str, mcc: str, amount_minor: int,
                    merchant_id: str) -> int:
    """The first product rule the purchase breaks, in the documented order, or 0. The amount
    bounds are the channel's where it has its own."""
    if channel not in rules.channels:
        return DeclineReason.CHANNEL_NOT_ALLOWED
    if mcc in rules.mcc_deny or (rules.mcc_allow and mcc not in rules.mcc_allow):
        return DeclineReason.MCC_NOT_ALLOWED
    if rules.merchant_lists and (
        merchant_id in rules.merchants_deny
        or merchant_id.startswith(rules.merchant_deny_prefixes)
        or (rules.merchant_allow_listed
            and merchant_id not in rules.merchants_allow
            and not merchant_id.startswith(rules.merchant_allow_prefixes))
    ):
        return DeclineReason.MERCHANT_NOT_ALLOWED
    low, high = rules.amount_min_minor, rules.amount_max_minor
    if rules.bounds_by_channel and channel in rules.bounds_by_channel:
        low, high = rules.bounds_by_channel[channel]
    if amount_minor < low:
        return DeclineReason.AMOUNT_BELOW_MINIMUM
    if amount_minor > high:
        return DeclineReason.AMOUNT_ABOVE_MAXIMUM
    return 0


def fingerprint(*parts: str) -> str:
    """A short digest of a request's payload, stored with its idempotency record."""
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()


def authorize_fingerprint(product_id: str, channel: str, merchant_id: str, mcc: str,
                          amount: str, currency: str, partial_asked: str, months: str) -> str:
    """An Authorize's fingerprint: every field of the purchase but its keys (the idempotency
    key and the customer), as text; no catalog goes into it, so plan_replay computes the same
    one for a request the catalog in force refuses."""
    return fingerprint(product_id, channel, merchant_id, mcc, amount, currency, partial_asked,
                       months)


def plan_authorize(request, rules_by_product: dict, partitions: int):
    """Validate an AuthorizeRequest and build the reserve script's (keys, args).

    Raises InvalidArgument for bad input, checking fields in the order of the proto. An
    approval's hold id is not planned: reserve.lua derives it from the idempotency record's
    key (limits/keys.derived_hold_id).
    """
    idempotency_key = request.idempotency_key
    customer_id = request.customer_id
    product_id = request.product_id
    merchant_id = request.merchant_id
    mcc = request.mcc
    amount_minor = request.amount_minor
    currency = request.currency
    allow_partial = request.allow_partial
    installment_months = request.installment_months
    check_id("idempotency_key", idempotency_key)
    check_id("customer_id", customer_id)
    check_id("product_id", product_id)
    rules = rules_by_product.get(product_id)
    if rules is None:
        raise InvalidArgument("product_id", f"unknown product {product_id!r}")
    channel = _channel(request.channel)
    check_id("merchant_id", merchant_id)
    if len(mcc) != 4 or not _DIGITS.issuperset(mcc):
        raise InvalidArgument("mcc", "must be four digits (ISO 18245)")
    check_amount("amount_minor", amount_minor)
    _check_terms(rules, product_id, currency, installment_months)

    base = keys.customer_base(customer_id, partitions)
    amount = str(amount_minor)
    partial_asked = "1" if allow_partial else "0"
    months = str(installment_months)
    keys_ = _reserve_keys(base, customer_id, idempotency_key)
    a = RESERVE.args
    args = [""] * len(a)
    args[a.base] = base
    args[a.customer_id] = customer_id
    args[a.fingerprint] = authorize_fingerprint(
        product_id, channel, merchant_id, mcc, amount, currency, partial_asked, months
    )
    args[a.amount_minor] = amount
    args[a.rule_decline] = str(product_decline(rules, channel, mcc, amount_minor, merchant_id))
    args[a.partial_approval] = "1" if rules.partial_approval and allow_partial else "0"
    args[a.installment_months] = months
    args[a.merchant_id] = merchant_id
    args[a.mcc] = mcc
    args[a.rules] = rules.rules_by_channel[channel]
    return keys_, args


def plan_replay(request, partitions: int):
    """The replay script's (keys, args) for an AuthorizeRequest that plan_authorize refused
    for a field the catalog decides (an unknown product, a currency or installment term the
    product does not offer): the decision its key may already have, asked read-only
    (gateway/authorize.py). Raises InvalidArgument for what is bad whatever the catalog (a
    malformed id, channel, mcc, amount, currency code or term): such a request is answered
    without a Redis call. A cold path: the pure-Python twin serves both."""
    idempotency_key, customer_id = request.idempotency_key, request.customer_id
    product_id, merchant_id, mcc = request.product_id, request.merchant_id, request.mcc
    amount_minor, currency = request.amount_minor, request.currency
    installment_months = request.installment_months
    check_id("idempotency_key", idempotency_key)
    check_id("customer_id", customer_id)
    check_id("product_id", product_id)
    channel = _channel(request.channel)
    check_id("merchant_id", merchant_id)
    if len(mcc) != 4 or not _DIGITS.issuperset(mcc):
        raise InvalidArgument("mcc", "must be four digits (ISO 18245)")
    check_amount("amount_minor", amount_minor)
    if currency not in CURRENCIES:
        raise InvalidArgument("currency", "unknown currency (ISO 4217 code expected)")
    if installment_months != 0 and not 2 <= installment_months <= INSTALLMENT_MONTHS_MAX:
        raise InvalidArgument("installment_months",
                              f"must be 0 or 2..{INSTALLMENT_MONTHS_MAX}")
    base = keys.customer_base(customer_id, partitions)
    replay = contracts.REPLAY
    keys_ = replay.keys.pack(
        customer=keys.customer(base, customer_id),
        idempotency=keys.idempotency_authorize(base, customer_id, idempotency_key))
    args = replay.args.pack(base=base, fingerprint=authorize_fingerprint(
        product_id, channel, merchant_id, mcc, str(amount_minor), currency,
        "1" if request.allow_partial else "0", str(installment_months)))
    return keys_, args


def _channel(channel_number: int) -> str:
    """The catalog name of a creditgate.v1.Channel number."""
    if channel_number == 0:
        raise InvalidArgument("channel", "required")
    if not 0 < channel_number < len(CHANNEL_NAMES):
        raise InvalidArgument("channel", f"unknown channel {channel_number}")
    return CHANNEL_NAMES[channel_number]


def _check_terms(rules: ProductRules, product_id: str, currency: str,
                 installment_months: int) -> None:
    """The currency, then the installment term, against the product."""
    if not currency:
        raise InvalidArgument("currency", "required")
    if currency not in CURRENCIES:
        raise InvalidArgument("currency", "unknown currency (ISO 4217 code expected)")
    if currency != rules.currency:
        raise InvalidArgument("currency", f"product {product_id!r} is in {rules.currency}")
    # 0 pays in full; a product offers terms of 2 months and more, so a negative one is refused.
    if installment_months != 0 and installment_months not in rules.installment_months:
        raise InvalidArgument("installment_months", rules.installment_terms)


def _reserve_keys(base: str, customer_id: str, idempotency_key: str) -> list[str]:
    k = RESERVE.keys
    keys_ = [""] * len(k)
    keys_[k.customer] = keys.customer(base, customer_id)
    keys_[k.customer_holds] = keys.customer_holds(base, customer_id)
    keys_[k.due] = keys.due(base)
    keys_[k.outbox] = keys.outbox(base)
    keys_[k.idempotency] = keys.idempotency_authorize(base, customer_id, idempotency_key)
    return keys_


def plan_capture(request, partitions: int):
    """Validate a CaptureRequest and build the capture script's (keys, args)."""
    check_id("idempotency_key", request.idempotency_key)
    hold_id = request.hold_id
    base = _hold_base(hold_id, partitions)
    check_amount("amount_minor", request.amount_minor)
    amount = str(request.amount_minor)
    final = "1" if request.final else "0"
    k = CAPTURE.keys
    keys_ = [""] * len(k)
    keys_[k.hold] = keys.hold(base, hold_id)
    keys_[k.idempotency] = keys.idempotency_capture(base, hold_id, request.idempotency_key)
    keys_[k.due] = keys.due(base)
    keys_[k.outbox] = keys.outbox(base)
    a = CAPTURE.args
    args = [""] * len(a)
    args[a.base] = base
    args[a.hold_id] = hold_id
    args[a.fingerprint] = fingerprint("capture", amount, final)
    args[a.amount_minor] = amount
    args[a.final] = final
    return keys_, args


def plan_void(request, partitions: int):
    """Validate a VoidRequest and build the void script's (keys, args)."""
    check_id("idempotency_key", request.idempotency_key)
    hold_id = request.hold_id
    base = _hold_base(hold_id, partitions)
    k = VOID.keys
    keys_ = [""] * len(k)
    keys_[k.hold] = keys.hold(base, hold_id)
    keys_[k.idempotency] = keys.idempotency_void(base, hold_id, request.idempotency_key)
    keys_[k.due] = keys.due(base)
    keys_[k.outbox] = keys.outbox(base)
    a = VOID.args
    args = [""] * len(a)
    args[a.base] = base
    args[a.hold_id] = hold_id
    args[a.fingerprint] = fingerprint("void")
    return keys_, args


def _hold_base(hold_id: str, partitions: int) -> str:
    check_id("hold_id", hold_id)
    partition = keys.partition_of_hold(hold_id, partitions)
    if partition is None:
        raise InvalidArgument("hold_id", "not a hold id issued by this gateway")
    return keys.base(partition)
