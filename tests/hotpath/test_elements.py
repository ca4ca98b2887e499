"""The product elements the hot path decides, in both twins: merchant allow and deny lists
(exact ids and prefixes ending in '*') and per-channel bounds; and the rules text that carries
the channel's bounds (and the elements reserve.lua decides) to the script."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath import _plan_py
from creditgate.limits import catalog, contracts
from creditgate.limits.reasons import DeclineReason as R

CATALOG = """
[products.p]
name = "P"
nodes = ["total", "consumer"]
channels = ["pos", "ecommerce", "qr_scan"]
amount_min_minor = 100
amount_max_minor = 10_000
hold_ttl_s = 60
mcc_deny = ["7995"]
merchants_allow = ["shop-*", "m-1", "mer-310115-*"]
merchants_deny = ["shop-9*", "mer-310115-0001"]
channel_bounds.pos = { amount_min_minor = 500, amount_max_minor = 2_000 }
channel_bounds.qr_scan = { amount_max_minor = 3_000 }

[products.deny_only]
name = "Deny only"
nodes = ["total", "consumer"]
channels = ["pos"]
amount_min_minor = 100
amount_max_minor = 10_000
hold_ttl_s = 60
merchants_deny = ["bad-*", "worse"]
"""
PRODUCTS = catalog.parse(CATALOG)


@pytest.fixture
def element_rules(impl):
    return impl.compile_products(PRODUCTS)


MERCHANT_CASES = [
    # (product, merchant, reason)
    ("p", "m-1", 0),  # exact on the allow list
    ("p", "m-12", R.MERCHANT_NOT_ALLOWED),  # an exact entry is no prefix
    ("p", "m-", R.MERCHANT_NOT_ALLOWED),
    ("p", "shop-1", 0),  # allowed by the prefix "shop-"
    ("p", "shop-", 0),  # the prefix itself
    ("p", "shop-9", R.MERCHANT_NOT_ALLOWED),  # denied by the prefix "shop-9": deny wins
    ("p", "shop-95x", R.MERCHANT_NOT_ALLOWED),
    ("p", "shop-89", 0),
    ("p", "Shop-1", R.MERCHANT_NOT_ALLOWED),  # case matters
    ("p", "mer-310115-0002", 0),
    ("p", "mer-310115-0001", R.MERCHANT_NOT_ALLOWED),  # denied exactly inside an allowed prefix
    ("p", "other", R.MERCHANT_NOT_ALLOWED),  # not on the allow list
    ("deny_only", "anyone", 0),  # no allow list: every merchant not denied
    ("deny_only", "bad-1", R.MERCHANT_NOT_ALLOWED),
    ("deny_only", "bad", 0),
    ("deny_only", "worse", R.MERCHANT_NOT_ALLOWED),
    ("deny_only", "worse-1", 0),
]


@pytest.mark.parametrize(("product_id", "merchant", "reason"), MERCHANT_CASES)
def test_merchant_lists(impl, element_rules, product_id, merchant, reason):
    assert impl.product_decline(element_rules[product_id], "pos", "5411", 1_000,
                                merchant) == reason


def test_merchant_after_mcc_and_before_the_amount(impl, element_rules):
    rules = element_rules["p"]
    assert impl.product_decline(rules, "pos", "7995", 1, "other") == R.MCC_NOT_ALLOWED
    assert impl.product_decline(rules, "pos", "5411", 1, "other") == R.MERCHANT_NOT_ALLOWED
    assert impl.product_decline(rules, "cash", "5411", 1, "other") == R.CHANNEL_NOT_ALLOWED


BOUNDS_CASES = [
    # (channel, amount, reason): pos 500..2,000; qr_scan 100..3,000 (its min is the
    # product's); ecommerce the product's 100..10,000.
    ("pos", 499, R.AMOUNT_BELOW_MINIMUM),
    ("pos", 500, 0),
    ("pos", 2_000, 0),
    ("pos", 2_001, R.AMOUNT_ABOVE_MAXIMUM),
    ("qr_scan", 99, R.AMOUNT_BELOW_MINIMUM),
    ("qr_scan", 100, 0),
    ("qr_scan", 3_000, 0),
    ("qr_scan", 3_001, R.AMOUNT_ABOVE_MAXIMUM),
    ("ecommerce", 100, 0),
    ("ecommerce", 10_000, 0),
    ("ecommerce", 10_001, R.AMOUNT_ABOVE_MAXIMUM),
]


@pytest.mark.parametrize(("channel", "amount", "reason"), BOUNDS_CASES)
def test_channel_bounds(impl, element_rules, channel, amount, reason):
    assert impl.product_decline(element_rules["p"], channel, "5411", amount, "m-1") == reason


def test_the_rules_text_carries_the_channels_bounds(impl, element_rules):
    """reserve.lua's counter-offer minimum and a hold's increment maximum come from the rules
    text: they follow the channel."""
    for channel, low, high in (("pos", 500, 2_000), ("qr_scan", 100, 3_000),
                               ("ecommerce", 100, 10_000)):
        text = element_rules["p"].rules_by_channel[channel]
        fields = contracts.PRODUCT_RULES.bind(text.split(contracts.RULES_SEPARATOR))
        assert (fields.amount_min_minor, fields.amount_max_minor) == (str(low), str(high))


def test_the_plan_carries_the_merchant_decline(impl, element_rules):
    request = pb.AuthorizeRequest(idempotency_key="k", customer_id="c", product_id="p",
                                  channel=pb.CHANNEL_POS, merchant_id="shop-9", mcc="5411",
                                  amount_minor=1_000, currency="CNY")
    _, args = impl.plan_authorize(request, element_rules, 16)
    assert args[contracts.RESERVE.args.rule_decline] == str(int(R.MERCHANT_NOT_ALLOWED))


merchants = st.text(alphabet="shop-9m1ab", min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(product_id=st.sampled_from(sorted(PRODUCTS)),
       channel=st.sampled_from(["pos", "ecommerce", "qr_scan", "cash"]),
       merchant=merchants, amount=st.integers(1, 12_000))
def test_twins_agree_on_elements(plan_c, product_id, channel, merchant, amount):
    py, c = _plan_py.compile_products(PRODUCTS), plan_c.compile_products(PRODUCTS)
    expected = _plan_py.product_decline(py[product_id], channel, "5411", amount, merchant)
    assert plan_c.product_decline(c[product_id], channel, "5411", amount, merchant) == expected
    # And the specification itself: deny (exact or prefix) first, then the allow list.
    product = PRODUCTS[product_id]

    def listed(entries):
        return any(merchant == e or (e.endswith("*") and merchant.startswith(e[:-1]))
                   for e in entries)

    if channel in product.channels and (listed(product.merchants_deny) or (
            product.merchants_allow and not listed(product.merchants_allow))):
        assert expected == R.MERCHANT_NOT_ALLOWED
    elif channel in product.channels:
        assert expected != R.MERCHANT_NOT_ALLOWED
