"""The compiled twin against the specification on random input: both raise the same error
(class, field and message) or both return the same (keys, args), element for element."""

from __future__ import annotations

import string
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath import _plan_py
from creditgate.hotpath._plan_py import InvalidArgument
from creditgate.limits.constants import (
    AMOUNT_MINOR_MAX,
    HOLD_TOKEN_LENGTH,
    ID_LENGTH_MAX,
    PARTITIONS_MAX,
)

# The fixtures below are module- and session-scoped: hypothesis runs many examples per call.
TWIN_SETTINGS = settings(max_examples=400)

ID_ALPHABET = "".join(chr(c) for c in range(0x21, 0x7B)) + "~"
NASTY = " {}|\x00\x01\x7f\t\n\u00e9\u00b2\u0661\u20ac\U0001f600"
BASE32 = string.ascii_uppercase + "234567"
INT64 = st.integers(-(2**63), 2**63 - 1)

ids = st.one_of(
    st.text(ID_ALPHABET, min_size=1, max_size=ID_LENGTH_MAX),
    st.text(ID_ALPHABET + NASTY, max_size=ID_LENGTH_MAX + 2),
    st.sampled_from(["", "k", "~" * ID_LENGTH_MAX, "x" * (ID_LENGTH_MAX + 1)]),
)
product_ids = st.one_of(st.sampled_from(["scan_pay", "ecommerce", "cash", "unknown", ""]), ids)
channels = st.one_of(st.integers(-1, 6), st.integers(-(2**31), 2**31 - 1))
mccs = st.one_of(
    st.sampled_from(["5411", "7995", "6051", "4829", "6011", "0000", "9999"]),
    st.text("0123456789", min_size=4, max_size=4),
    st.text("0123456789a \u0661\u00b2", max_size=6),
)
# The catalog's bounds (cash 10_000..2_000_000, scan_pay 100..5_000_000) and the protocol's.
AMOUNT_EDGES = (0, 1, 99, 100, 9_999, 10_000, 2_000_000, 2_000_001, 5_000_000, 5_000_001)
amounts = st.one_of(
    st.sampled_from((*AMOUNT_EDGES, -1, AMOUNT_MINOR_MAX, AMOUNT_MINOR_MAX + 1)),
    st.integers(1, 20_000_000),
    INT64,
)
currencies = st.one_of(st.sampled_from(["CNY", "", "XYZ", "USD", "cny", "CNY "]), st.text())
# The catalog offers 3, 6, 12 (scan_pay) and 24 (ecommerce) months; int32 on the wire.
installment_terms = st.one_of(
    st.sampled_from([0, 0, 3, 6, 12, 24, -1, 1, 2, 60, 63, 64]),
    st.integers(-(2**31), 2**31 - 1),
)
partition_counts = st.integers(1, PARTITIONS_MAX)
tokens = st.text(BASE32, min_size=HOLD_TOKEN_LENGTH, max_size=HOLD_TOKEN_LENGTH)
hold_ids = st.one_of(
    st.builds(lambda p, t: f"{p:03d}-{t}", st.integers(0, 999), tokens),
    st.builds(lambda p, t: f"{p}-{t}", st.integers(-5, 1200), tokens),
    st.builds(lambda h, t: f"{h}-{t}", st.text("0123456789a-\u0661 ", max_size=4), tokens),
    ids,
)


def outcome(call):
    """What a call did: its result, or its exception's class, field and message."""
    try:
        return ("returned", call())
    except InvalidArgument as error:
        return ("invalid", error.field, str(error))
    except Exception as error:  # an odd input may fail in any way, but alike
        return ("raised", type(error), str(error))


@pytest.fixture(scope="module")
def twins(plan_c, catalog):
    return (
        (_plan_py, _plan_py.compile_products(catalog)),
        (plan_c, plan_c.compile_products(catalog)),
    )


def assert_alike(twins, call):
    (py, py_rules), (c, c_rules) = twins
    expected = outcome(lambda: call(py, py_rules))
    assert outcome(lambda: call(c, c_rules)) == expected
    return expected


# An AuthorizeRequest's fields and a partition count, as every authorize property draws them.
AUTHORIZE_FIELDS = dict(
    idempotency_key=ids,
    customer_id=ids,
    product_id=product_ids,
    channel=channels,
    merchant_id=ids,
    mcc=mccs,
    amount_minor=amounts,
    currency=currencies,
    allow_partial=st.booleans(),
    installment_months=installment_terms,
    partitions=partition_counts,
)


@TWIN_SETTINGS
@given(**AUTHORIZE_FIELDS)
def test_plan_authorize(twins, partitions, **fields):
    request = pb.AuthorizeRequest(**fields)
    assert_alike(twins, lambda impl, rules: impl.plan_authorize(request, rules, partitions))


@TWIN_SETTINGS
@given(
    customer_id=st.text(ID_ALPHABET, min_size=1, max_size=ID_LENGTH_MAX),
    product_id=st.sampled_from(["scan_pay", "ecommerce", "cash"]),
    channel=st.integers(1, 4),
    mcc=mccs.filter(lambda mcc: len(mcc) == 4 and mcc.isascii() and mcc.isdigit()),
    amount_minor=st.integers(1, 20_000_000),
    allow_partial=st.booleans(),
    installment_months=st.sampled_from([0, 3, 6, 12, 24]),
    partitions=partition_counts,
)
def test_plan_authorize_valid(twins, partitions, **fields):
    """Mostly valid requests, so that plans (not errors) are compared."""
    request = pb.AuthorizeRequest(
        idempotency_key="idem", merchant_id="merchant", currency="CNY", **fields
    )
    result = assert_alike(
        twins, lambda impl, rules: impl.plan_authorize(request, rules, partitions)
    )
    offered = {"scan_pay": (0, 3, 6, 12), "ecommerce": (0, 3, 6, 12, 24), "cash": (0,)}
    if fields["installment_months"] in offered[fields["product_id"]]:
        assert result[0] == "returned"
    else:
        assert result[:2] == ("invalid", "installment_months")


@TWIN_SETTINGS
@given(
    idempotency_key=ids,
    hold_id=hold_ids,
    amount_minor=amounts,
    final=st.booleans(),
    partitions=st.one_of(partition_counts, st.integers(-3, 3), INT64),
)
def test_plan_capture(twins, partitions, **fields):
    request = pb.CaptureRequest(**fields)
    assert_alike(twins, lambda impl, rules: impl.plan_capture(request, partitions))


@TWIN_SETTINGS
@given(
    idempotency_key=ids,
    hold_id=hold_ids,
    partitions=st.one_of(partition_counts, st.integers(-3, 3), INT64),
)
def test_plan_void(twins, partitions, **fields):
    request = pb.VoidRequest(**fields)
    assert_alike(twins, lambda impl, rules: impl.plan_void(request, partitions))


@TWIN_SETTINGS
@given(value=st.one_of(ids, st.text()))
def test_check_id(twins, value):
    assert_alike(twins, lambda impl, rules: impl.check_id("field", value))


@TWIN_SETTINGS
@given(amount_minor=st.one_of(amounts, st.integers()))
def test_check_amount(twins, amount_minor):
    assert_alike(twins, lambda impl, rules: impl.check_amount("amount_minor", amount_minor))


@TWIN_SETTINGS
@given(
    product_id=st.sampled_from(["scan_pay", "ecommerce", "cash"]),
    channel=st.one_of(st.sampled_from(_plan_py.CHANNEL_NAMES), st.text()),
    mcc=st.one_of(mccs, st.text()),
    amount_minor=st.one_of(amounts, st.integers()),
)
def test_product_decline(twins, product_id, channel, mcc, amount_minor):
    result = assert_alike(
        twins,
        lambda impl, rules: impl.product_decline(rules[product_id], channel, mcc, amount_minor,
                                                "m-1"),
    )
    assert result[0] == "returned"


@TWIN_SETTINGS
@given(parts=st.lists(st.text(), max_size=8))
def test_fingerprint(twins, parts):
    assert_alike(twins, lambda impl, rules: impl.fingerprint(*parts))


# Requests that are not protobuf messages: the compiled twin hands odd types to the Python one.

odd_strings = st.one_of(
    ids,
    st.none(),
    st.integers(-2, 2),
    st.binary(max_size=4),
    st.builds(type("Text", (str,), {}), ids),
)
odd_ints = st.one_of(
    amounts, st.integers(), st.booleans(), st.none(), st.floats(-1e12, 1e12), st.text(max_size=3)
)


@TWIN_SETTINGS
@given(
    idempotency_key=odd_strings,
    customer_id=odd_strings,
    product_id=st.one_of(product_ids, odd_strings),
    channel=st.one_of(channels, odd_ints),
    merchant_id=odd_strings,
    mcc=st.one_of(mccs, odd_strings),
    amount_minor=odd_ints,
    currency=st.one_of(currencies, odd_strings),
    allow_partial=st.one_of(st.booleans(), st.none(), st.integers(-1, 2), st.text(max_size=1)),
    installment_months=st.one_of(installment_terms, odd_ints),
    partitions=st.one_of(partition_counts, st.integers(-3, 2000), st.booleans()),
)
def test_plan_authorize_odd_input(twins, partitions, **fields):
    request = SimpleNamespace(**fields)
    assert_alike(twins, lambda impl, rules: impl.plan_authorize(request, rules, partitions))


@TWIN_SETTINGS
@given(
    idempotency_key=odd_strings,
    hold_id=st.one_of(hold_ids, odd_strings),
    amount_minor=odd_ints,
    final=st.one_of(st.booleans(), st.none(), st.integers(-1, 1), st.text(max_size=1)),
    partitions=st.one_of(partition_counts, st.integers(), st.booleans()),
)
def test_hold_plans_odd_input(twins, partitions, **fields):
    request = SimpleNamespace(**fields)
    assert_alike(twins, lambda impl, rules: impl.plan_capture(request, partitions))
    assert_alike(twins, lambda impl, rules: impl.plan_void(request, partitions))


def test_product_rules_read_alike(twins):
    (_, py_rules), (_, c_rules) = twins
    assert py_rules.keys() == c_rules.keys()
    for product_id, expected in py_rules.items():
        assert vars(expected) == {
            name: getattr(c_rules[product_id], name) for name in vars(expected)
        }


def test_twins_accept_each_others_rules(twins):
    """The compiled twin hands rules it did not make to the Python twin, which reads them by
    attribute: both kinds of rules give one plan."""
    (py, py_rules), (c, c_rules) = twins
    request = pb.AuthorizeRequest(
        idempotency_key="k",
        customer_id="cust-1",
        product_id="cash",
        channel=pb.CHANNEL_CASH,
        merchant_id="m",
        mcc="5411",
        amount_minor=50_000,
        currency="CNY",
        allow_partial=True,
    )
    expected = py.plan_authorize(request, py_rules, 256)
    for impl, rules in ((c, py_rules), (py, c_rules)):
        assert impl.plan_authorize(request, rules, 256) == expected
        assert impl.product_decline(rules["cash"], "cash", "5411", 50_000, "m-1") == 5


@TWIN_SETTINGS
@given(**AUTHORIZE_FIELDS)
def test_plan_replay_asks_for_the_decision_plan_authorize_would_replay(twins, partitions,
                                                                       **fields):
    """plan_replay (the gateway's read-only question when the catalog refuses a request) names
    the record and fingerprint each twin's plan_authorize gives reserve; it refuses, with no
    Redis call, every request plan_authorize refuses for a reason no catalog changes."""
    from creditgate.gateway.authorize import CATALOG_FIELDS
    from creditgate.limits import contracts

    request = pb.AuthorizeRequest(**fields)
    replayed = outcome(lambda: _plan_py.plan_replay(request, partitions))
    for impl, rules in twins:
        planned = outcome(lambda impl=impl, rules=rules: impl.plan_authorize(request, rules,
                                                                             partitions))
        if planned[0] == "returned":
            (keys_, args), (replay_keys, replay_args) = planned[1], replayed[1]
            assert replay_keys == [keys_[contracts.RESERVE.keys.customer],
                                   keys_[contracts.RESERVE.keys.idempotency]]
            assert replay_args == [args[contracts.RESERVE.args.base],
                                   args[contracts.RESERVE.args.fingerprint]]
        elif replayed[0] == "returned":  # refused only by what the catalog decides
            assert planned[1] in CATALOG_FIELDS, planned
            assert ("unknown product" in planned[2] or "is in" in planned[2]
                    or "offers" in planned[2]), planned
