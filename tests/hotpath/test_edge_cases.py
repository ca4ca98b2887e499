"""The compiled twin against the specification on chosen edge cases: ids at the bounds of their
length and alphabet, every field's first bad value, catalogs keyed oddly, and the fingerprint
(BLAKE2b through hashlib in both) around its 128-byte blocks and on non-ASCII text."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath import _plan_py
from creditgate.hotpath._plan_py import InvalidArgument
from creditgate.limits.contracts import RESERVE

PARTITIONS = 256
FIELDS = {
    "idempotency_key": "idem-0001",
    "customer_id": "cust-000123",
    "product_id": "scan_pay",
    "channel": pb.CHANNEL_POS,
    "merchant_id": "merchant-42",
    "mcc": "5411",
    "amount_minor": 12_345,
    "currency": "CNY",
    "allow_partial": True,
    "installment_months": 6,
}


def outcome(call):
    try:
        return ("returned", call())
    except InvalidArgument as error:
        return ("invalid", error.field, str(error))


def assert_alike(plan_c, catalog, request, rules_of=None):
    """Both twins plan request alike; rules_of turns each twin's rules into what is passed."""
    rules_of = rules_of or (lambda rules: rules)
    expected = outcome(
        lambda: _plan_py.plan_authorize(
            request, rules_of(_plan_py.compile_products(catalog)), PARTITIONS
        )
    )
    actual = outcome(
        lambda: plan_c.plan_authorize(
            request, rules_of(plan_c.compile_products(catalog)), PARTITIONS
        )
    )
    assert actual == expected
    return expected


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"allow_partial": False, "installment_months": 0},  # the defaults
        {"channel": pb.CHANNEL_QR_SCAN, "installment_months": 12},
        {"product_id": "ecommerce", "channel": pb.CHANNEL_ECOMMERCE, "installment_months": 24},
        {"product_id": "cash", "channel": pb.CHANNEL_CASH, "mcc": "6011", "installment_months": 0},
        {"amount_minor": 1},
        {"amount_minor": 100_000_000_000},
        {"idempotency_key": "~" * 64, "customer_id": "!" * 64, "merchant_id": "z" * 64},
        {"idempotency_key": "a~b", "customer_id": "~", "merchant_id": "~z~"},  # '~' per byte
    ],
)
def test_valid_requests(plan_c, catalog, changes):
    result = assert_alike(plan_c, catalog, pb.AuthorizeRequest(**{**FIELDS, **changes}))
    assert result[0] == "returned"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"idempotency_key": "a" * 65}, "idempotency_key"),
        ({"customer_id": "caf\u00e9"}, "customer_id"),
        ({"customer_id": "x" * 63 + "\u00e9"}, "customer_id"),  # 64 characters, 65 bytes
        ({"product_id": "scan_pa"}, "product_id"),
        ({"product_id": "scan_pay_"}, "product_id"),
        ({"channel": 0}, "channel"),
        ({"channel": -1}, "channel"),
        ({"channel": 2**31 - 1}, "channel"),
        ({"merchant_id": "a{b"}, "merchant_id"),
        ({"mcc": "541"}, "mcc"),
        ({"mcc": "54a1"}, "mcc"),
        ({"amount_minor": -5}, "amount_minor"),
        ({"amount_minor": 100_000_000_001}, "amount_minor"),
        ({"currency": "CN"}, "currency"),
        ({"currency": "CNY\u00e9"}, "currency"),
        ({"installment_months": -6}, "installment_months"),
        ({"installment_months": 64}, "installment_months"),
        ({"installment_months": 2**31 - 1}, "installment_months"),
    ],
)
def test_invalid_requests(plan_c, catalog, changes, field):
    result = assert_alike(plan_c, catalog, pb.AuthorizeRequest(**{**FIELDS, **changes}))
    assert result[:2] == ("invalid", field)


def test_rules_keyed_by_another_name(plan_c, catalog):
    """The plan carries the rules found under the request's product id, which name the id they
    were made from (the catalog keys each product by its own id)."""
    product = msgspec.structs.replace(catalog["scan_pay"])
    renamed = {"renamed": product}
    request = pb.AuthorizeRequest(**{**FIELDS, "product_id": "renamed"})
    result = assert_alike(plan_c, renamed, request)
    assert result[0] == "returned"
    assert result[1][1][RESERVE.args.rules].startswith("scan_pay|")


def test_a_large_catalog(plan_c, catalog):
    many = {f"product_{number:02d}": catalog["scan_pay"] for number in range(40)}
    request = pb.AuthorizeRequest(**{**FIELDS, "product_id": "product_37"})
    result = assert_alike(plan_c, many, request)
    assert result[0] == "returned"
    assert result[1][1][RESERVE.args.rules].startswith("scan_pay|")
    unknown = pb.AuthorizeRequest(**{**FIELDS, "product_id": "product_40"})
    assert assert_alike(plan_c, many, unknown)[:2] == ("invalid", "product_id")


@pytest.mark.parametrize(
    "extra_key",
    [1, ("scan_pay",), type("Name", (str,), {})("other")],
)
def test_a_catalog_with_other_keys(plan_c, catalog, extra_key):
    """Keys that are not exact str: the product is found alike."""

    def with_extra_key(rules):
        return {extra_key: rules["cash"], **rules}

    result = assert_alike(plan_c, catalog, pb.AuthorizeRequest(**FIELDS), with_extra_key)
    assert result[0] == "returned"


def test_a_rules_dict_without_the_product(plan_c, catalog):
    result = assert_alike(
        plan_c,
        catalog,
        pb.AuthorizeRequest(**FIELDS),
        lambda rules: {key: value for key, value in rules.items() if key != "scan_pay"},
    )
    assert result == ("invalid", "product_id", "product_id: unknown product 'scan_pay'")


@pytest.mark.parametrize(
    "length", [0, 1, 7, 8, 9, 63, 64, 127, 128, 129, 200, 255, 256, 257, 384, 1000]
)
def test_blake2b_over_block_boundaries(impl, length):
    """The fingerprint is hashlib's 8-byte BLAKE2b of the parts joined by '|'."""
    text = "".join(chr(0x21 + (index * 7) % 90) for index in range(length))
    expected = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
    assert impl.fingerprint(text) == expected
    assert impl.fingerprint(text[: length // 2], text[length // 2 :]) == hashlib.blake2b(
        (text[: length // 2] + "|" + text[length // 2 :]).encode(), digest_size=8
    ).hexdigest()


def test_blake2b_of_non_ascii_text(impl):
    text = "caf\u00e9 \u20ac \U0001f600"
    assert impl.fingerprint(text) == hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
