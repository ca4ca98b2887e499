"""Table tests of the hot path, each row run against both twins (the `impl` fixture)."""

from __future__ import annotations

import hashlib
import pickle
import zlib

import msgspec
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath._plan_py import InvalidArgument
from creditgate.limits import contracts
from creditgate.limits.catalog import Installments
from creditgate.limits.constants import AMOUNT_MINOR_MAX, ID_LENGTH_MAX
from creditgate.limits.contracts import RESERVE
from creditgate.limits.reasons import DeclineReason

PARTITIONS = 256
TOKEN = "ABCDEFGHIJKLMNOP"  # 16 base32 characters, as the gateway draws them

VALID_AUTHORIZE = {
    "idempotency_key": "idem-0001",
    "customer_id": "cust-000123",
    "product_id": "scan_pay",
    "channel": pb.CHANNEL_QR_SCAN,
    "merchant_id": "merchant-42",
    "mcc": "5411",
    "amount_minor": 12_345,
    "currency": "CNY",
}

ID_FIELDS = ("idempotency_key", "customer_id", "product_id", "merchant_id")
BAD_CHARACTER = "must be printable ASCII without spaces, '{', '}' or '|'"
SCAN_PAY_TERMS = "product 'scan_pay' offers 3, 6 or 12 months"
# (value, message) for every id field.
BAD_IDS = [
    ("", "required"),
    ("a" * (ID_LENGTH_MAX + 1), f"must be at most {ID_LENGTH_MAX} characters"),
    ("a{b", BAD_CHARACTER),
    ("a}b", BAD_CHARACTER),
    ("a|b", BAD_CHARACTER),
    ("a b", BAD_CHARACTER),
    ("a\x01b", BAD_CHARACTER),
    ("a\x7fb", BAD_CHARACTER),
    ("caf\u00e9", BAD_CHARACTER),
    ("\u20ac", BAD_CHARACTER),
    ("\U0001f600", BAD_CHARACTER),
]
# Rows of (field, value, message) for the fields that are not ids.
BAD_OTHER_FIELDS = [
    ("product_id", "no_such_product", "unknown product 'no_such_product'"),
    ("channel", 0, "required"),
    ("channel", 5, "unknown channel 5"),
    ("channel", 99, "unknown channel 99"),
    ("channel", -1, "unknown channel -1"),
    ("mcc", "", "must be four digits (ISO 18245)"),
    ("mcc", "12a4", "must be four digits (ISO 18245)"),
    ("mcc", "12345", "must be four digits (ISO 18245)"),
    ("mcc", "123", "must be four digits (ISO 18245)"),
    ("mcc", "\u0661\u0662\u0663\u0664", "must be four digits (ISO 18245)"),  # Arabic-Indic
    ("amount_minor", 0, "must be greater than 0 (integer minor units)"),
    ("amount_minor", -1, "must be greater than 0 (integer minor units)"),
    ("amount_minor", -(2**63), "must be greater than 0 (integer minor units)"),
    ("amount_minor", AMOUNT_MINOR_MAX + 1, f"must be at most {AMOUNT_MINOR_MAX}"),
    ("amount_minor", 2**63 - 1, f"must be at most {AMOUNT_MINOR_MAX}"),
    ("currency", "", "required"),
    ("currency", "XYZ", "unknown currency (ISO 4217 code expected)"),
    ("currency", "cny", "unknown currency (ISO 4217 code expected)"),
    # A known currency other than the product's cannot be built: CURRENCIES holds only CNY.
    ("installment_months", -1, SCAN_PAY_TERMS),
    ("installment_months", -(2**31), SCAN_PAY_TERMS),
    ("installment_months", 1, SCAN_PAY_TERMS),
    ("installment_months", 2, SCAN_PAY_TERMS),
    ("installment_months", 24, SCAN_PAY_TERMS),  # ecommerce offers it, scan_pay does not
    ("installment_months", 63, SCAN_PAY_TERMS),
    ("installment_months", 64, SCAN_PAY_TERMS),
    ("installment_months", 2**31 - 1, SCAN_PAY_TERMS),
]
# One bad value per field, in the order plan_authorize checks them (the proto's order).
FIELD_ORDER = [
    ("idempotency_key", ""),
    ("customer_id", "a b"),
    ("product_id", "no_such_product"),
    ("channel", 0),
    ("merchant_id", "a|b"),
    ("mcc", "12a4"),
    ("amount_minor", 0),
    ("currency", "XYZ"),
    ("installment_months", 5),
]


def authorize_request(**changes) -> pb.AuthorizeRequest:
    return pb.AuthorizeRequest(**{**VALID_AUTHORIZE, **changes})


def assert_invalid(call, field: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        call()
    assert caught.value.field == field
    assert str(caught.value) == f"{field}: {message}"
    assert str(caught.value).startswith(field + ": ")


def fingerprint(*parts: str) -> str:
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()


# check_id and check_amount


@pytest.mark.parametrize(("value", "message"), BAD_IDS)
def test_check_id_rejects(impl, value, message):
    assert_invalid(lambda: impl.check_id("some_id", value), "some_id", message)


@pytest.mark.parametrize(
    "value", ["a", "~", "!", "z", "A-Z_0.9:/@#$%^&*()[]<>?", "x" * ID_LENGTH_MAX]
)
def test_check_id_accepts(impl, value):
    assert impl.check_id("some_id", value) is None


@pytest.mark.parametrize(
    ("amount_minor", "message"),
    [
        (0, "must be greater than 0 (integer minor units)"),
        (-1, "must be greater than 0 (integer minor units)"),
        (-(2**80), "must be greater than 0 (integer minor units)"),
        (AMOUNT_MINOR_MAX + 1, f"must be at most {AMOUNT_MINOR_MAX}"),
        (2**80, f"must be at most {AMOUNT_MINOR_MAX}"),
    ],
)
def test_check_amount_rejects(impl, amount_minor, message):
    assert_invalid(lambda: impl.check_amount("amount_minor", amount_minor), "amount_minor", message)


@pytest.mark.parametrize("amount_minor", [1, 100, AMOUNT_MINOR_MAX])
def test_check_amount_accepts(impl, amount_minor):
    assert impl.check_amount("amount_minor", amount_minor) is None


# plan_authorize: bad input


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize(("value", "message"), BAD_IDS)
def test_authorize_rejects_bad_id(impl, rules, field, value, message):
    request = authorize_request(**{field: value})
    assert_invalid(lambda: impl.plan_authorize(request, rules, PARTITIONS), field, message)


@pytest.mark.parametrize(("field", "value", "message"), BAD_OTHER_FIELDS)
def test_authorize_rejects_bad_field(impl, rules, field, value, message):
    request = authorize_request(**{field: value})
    assert_invalid(lambda: impl.plan_authorize(request, rules, PARTITIONS), field, message)


@pytest.mark.parametrize("position", range(len(FIELD_ORDER) - 1))
def test_authorize_reports_the_first_bad_field(impl, rules, position):
    (first, first_value), (second, second_value) = FIELD_ORDER[position : position + 2]
    request = authorize_request(**{first: first_value, second: second_value})
    with pytest.raises(InvalidArgument) as caught:
        impl.plan_authorize(request, rules, PARTITIONS)
    assert caught.value.field == first


def test_authorize_checks_every_field_before_the_last(impl, rules):
    request = authorize_request(**dict(FIELD_ORDER))
    with pytest.raises(InvalidArgument) as caught:
        impl.plan_authorize(request, rules, PARTITIONS)
    assert caught.value.field == "idempotency_key"


# plan_authorize: the plan


def test_authorize_plan_layout(impl, rules):
    partition = zlib.crc32(b"cust-000123") % PARTITIONS
    base = f"cg:{{p:{partition:03d}}}:"

    keys, args = impl.plan_authorize(authorize_request(), rules, PARTITIONS)

    assert keys == [
        base + "c:cust-000123",
        base + "x:cust-000123",
        base + "due",
        base + "outbox",
        base + "ia:cust-000123|idem-0001",
    ]
    assert args == [
        base,
        "cust-000123",
        fingerprint("scan_pay", "qr_scan", "merchant-42", "5411", "12345", "CNY", "0", "0"),
        "12345",
        "0",  # no product rule broken
        "0",  # partial approval: the product allows it, the request did not ask
        "0",  # installment months: pay in full
        "merchant-42",
        "5411",
        # The product's rules on the channel, one text (limits/contracts.PRODUCT_RULES): id,
        # channel, currency, hold TTL in ms (7 days), velocity (day amount, day count, month
        # amount, month count), amount min and max, capture tolerance bps, not incremental,
        # monthly installment fee bps, effective from and until (0: always), allowed hours
        # ("0": any time), first-purchase max (0: none), the catalog
        # version ("-": rules compiled without a catalog), the nodes root first.
        "scan_pay|qr_scan|CNY|604800000|10000000|50|50000000|400|100|5000000|2000|0|60|"
        "0|0|0|0|-|total,consumer,consumer.scan_pay,consumer.scan_pay.qr",
    ]
    assert all(type(item) is str for item in keys + args)


def test_authorize_plan_exact_for_one_partition(impl, rules):
    request = authorize_request(
        product_id="ecommerce",
        channel=pb.CHANNEL_ECOMMERCE,
        amount_minor=10_000_000,
        allow_partial=True,
        installment_months=24,
    )
    keys, args = impl.plan_authorize(request, rules, 1)
    assert keys == [
        "cg:{p:000}:c:cust-000123",
        "cg:{p:000}:x:cust-000123",
        "cg:{p:000}:due",
        "cg:{p:000}:outbox",
        "cg:{p:000}:ia:cust-000123|idem-0001",
    ]
    assert args == [
        "cg:{p:000}:",
        "cust-000123",
        fingerprint("ecommerce", "ecommerce", "merchant-42", "5411", "10000000", "CNY", "1", "24"),
        "10000000",
        "0",
        "0",  # asked for, but the product has no partial approval
        "24",
        "merchant-42",
        "5411",
        # No monthly window, no capture tolerance, incremental; no channel node.
        "ecommerce|ecommerce|CNY|1209600000|20000000|100|0|0|100|10000000|0|1|50|0|0|0|0|-|"
        "total,consumer,consumer.online",
    ]


@pytest.mark.parametrize("partitions", [1, 7, 256, 1000])
def test_authorize_partition_is_crc32_of_customer(impl, rules, partitions):
    for customer_id in ("a", "cust-1", "~" * ID_LENGTH_MAX, "C0FFEE"):
        keys, args = impl.plan_authorize(
            authorize_request(customer_id=customer_id), rules, partitions
        )
        partition = zlib.crc32(customer_id.encode()) % partitions
        assert args[RESERVE.args.base] == f"cg:{{p:{partition:03d}}}:"
        assert keys[RESERVE.keys.customer] == f"cg:{{p:{partition:03d}}}:c:{customer_id}"


@pytest.mark.parametrize(
    ("channel", "nodes"),
    [
        (pb.CHANNEL_QR_SCAN, ["total", "consumer", "consumer.scan_pay", "consumer.scan_pay.qr"]),
        (pb.CHANNEL_POS, ["total", "consumer", "consumer.scan_pay", "consumer.scan_pay.pos"]),
        # A channel the product refuses still gets its path; the script declines first.
        (pb.CHANNEL_CASH, ["total", "consumer", "consumer.scan_pay"]),
    ],
)
def test_authorize_appends_the_channels_nodes(impl, rules, channel, nodes):
    _, args = impl.plan_authorize(authorize_request(channel=channel), rules, PARTITIONS)
    assert args[RESERVE.args.rules].split("|")[-1] == ",".join(nodes)


# plan_authorize: partial approval and installments (their slots: limits/contracts.RESERVE).

PARTIAL_FLAG = RESERVE.args.partial_approval
INSTALLMENT_MONTHS = RESERVE.args.installment_months


@pytest.mark.parametrize(
    ("product_id", "channel", "mcc", "allow_partial", "flag"),
    [
        ("scan_pay", pb.CHANNEL_POS, "5411", True, "1"),  # allowed and asked
        ("scan_pay", pb.CHANNEL_POS, "5411", False, "0"),  # allowed, not asked
        ("ecommerce", pb.CHANNEL_ECOMMERCE, "5411", True, "0"),  # asked, not allowed
        ("ecommerce", pb.CHANNEL_ECOMMERCE, "5411", False, "0"),
        ("cash", pb.CHANNEL_CASH, "6011", True, "0"),
    ],
)
def test_authorize_partial_flag(impl, rules, product_id, channel, mcc, allow_partial, flag):
    request = authorize_request(
        product_id=product_id, channel=channel, mcc=mcc, amount_minor=50_000,
        allow_partial=allow_partial,
    )
    _, args = impl.plan_authorize(request, rules, PARTITIONS)
    assert args[PARTIAL_FLAG] == flag


@pytest.mark.parametrize(
    ("product_id", "channel", "months"),
    [
        ("scan_pay", pb.CHANNEL_QR_SCAN, 0),
        ("scan_pay", pb.CHANNEL_QR_SCAN, 3),
        ("scan_pay", pb.CHANNEL_POS, 12),
        ("ecommerce", pb.CHANNEL_ECOMMERCE, 24),
        ("cash", pb.CHANNEL_CASH, 0),
    ],
)
def test_authorize_accepts_offered_terms(impl, rules, product_id, channel, months):
    request = authorize_request(product_id=product_id, channel=channel, installment_months=months)
    _, args = impl.plan_authorize(request, rules, PARTITIONS)
    assert args[INSTALLMENT_MONTHS] == str(months)


@pytest.mark.parametrize(
    ("product_id", "channel", "months", "message"),
    [
        ("scan_pay", pb.CHANNEL_QR_SCAN, 24, SCAN_PAY_TERMS),
        ("ecommerce", pb.CHANNEL_ECOMMERCE, 9, "product 'ecommerce' offers 3, 6, 12 or 24 months"),
        ("ecommerce", pb.CHANNEL_ECOMMERCE, -3, "product 'ecommerce' offers 3, 6, 12 or 24 months"),
        ("cash", pb.CHANNEL_CASH, 3, "product 'cash' offers no installments"),
        ("cash", pb.CHANNEL_CASH, -1, "product 'cash' offers no installments"),
    ],
)
def test_authorize_rejects_terms_not_offered(impl, rules, product_id, channel, months, message):
    request = authorize_request(product_id=product_id, channel=channel, installment_months=months)
    assert_invalid(
        lambda: impl.plan_authorize(request, rules, PARTITIONS),
        "installment_months",
        message,
    )


@pytest.mark.parametrize(
    ("months", "message"),
    [
        ([6], "product 'one_term' offers 6 months"),
        ([12, 3], "product 'one_term' offers 3 or 12 months"),
        ([], "product 'one_term' offers no installments"),
    ],
)
def test_terms_message(impl, catalog, months, message):
    product = msgspec.structs.replace(
        catalog["scan_pay"], installments=Installments(months=months, monthly_fee_bps=10)
    )
    product.id = "one_term"
    rules = impl.compile_products({"one_term": product})
    request = authorize_request(product_id="one_term", installment_months=5)
    assert rules["one_term"].installment_terms == message
    assert_invalid(
        lambda: impl.plan_authorize(request, rules, PARTITIONS),
        "installment_months",
        message,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"allow_partial": True},  # asked, on a product that allows it
        {"installment_months": 3},
        {"installment_months": 6},
        {"amount_minor": 12_346},
        {"merchant_id": "merchant-43"},
        {"mcc": "5412"},
        {"channel": pb.CHANNEL_POS},
    ],
)
def test_fingerprint_covers_the_payload(impl, rules, changes):
    """A retry with other terms is an idempotency mismatch: its fingerprint differs."""
    _, first = impl.plan_authorize(authorize_request(), rules, PARTITIONS)
    _, retry = impl.plan_authorize(authorize_request(**changes), rules, PARTITIONS)
    assert retry[2] != first[2]  # ARGV[4]: the fingerprint


def test_fingerprint_takes_allow_partial_as_asked(impl, rules):
    """On a product without partial approval ARGV 19 stays 0, yet the request's flag counts."""
    request = {"product_id": "ecommerce", "channel": pb.CHANNEL_ECOMMERCE}
    _, asked = impl.plan_authorize(
        authorize_request(**request, allow_partial=True), rules, PARTITIONS
    )
    _, not_asked = impl.plan_authorize(authorize_request(**request), rules, PARTITIONS)
    assert asked[PARTIAL_FLAG] == not_asked[PARTIAL_FLAG] == "0"
    assert asked[2] != not_asked[2]


# product_decline: one row per reason, in the documented order, then precedence.

DECLINE_ROWS = [
    # (product, channel, mcc, amount_minor, reason)
    ("scan_pay", "ecommerce", "5411", 10_000, DeclineReason.CHANNEL_NOT_ALLOWED),
    ("scan_pay", "qr_scan", "7995", 10_000, DeclineReason.MCC_NOT_ALLOWED),  # deny list
    ("cash", "cash", "5411", 50_000, DeclineReason.MCC_NOT_ALLOWED),  # not on the allow list
    ("scan_pay", "pos", "5411", 99, DeclineReason.AMOUNT_BELOW_MINIMUM),
    ("scan_pay", "pos", "5411", 5_000_001, DeclineReason.AMOUNT_ABOVE_MAXIMUM),
    # Nothing broken, at both bounds.
    ("scan_pay", "qr_scan", "5411", 100, 0),
    ("scan_pay", "pos", "5411", 5_000_000, 0),
    ("cash", "cash", "6011", 10_000, 0),
    # Two rules broken: the earlier one answers.
    ("scan_pay", "cash", "7995", 10_000, DeclineReason.CHANNEL_NOT_ALLOWED),
    ("scan_pay", "ecommerce", "5411", 1, DeclineReason.CHANNEL_NOT_ALLOWED),
    ("scan_pay", "qr_scan", "6051", 1, DeclineReason.MCC_NOT_ALLOWED),
    ("cash", "cash", "5411", 1, DeclineReason.MCC_NOT_ALLOWED),
    ("cash", "cash", "6011", 9_999, DeclineReason.AMOUNT_BELOW_MINIMUM),
    ("cash", "qr_scan", "5411", 3_000_000, DeclineReason.CHANNEL_NOT_ALLOWED),
]


@pytest.mark.parametrize(("product_id", "channel", "mcc", "amount_minor", "reason"), DECLINE_ROWS)
def test_product_decline(impl, rules, product_id, channel, mcc, amount_minor, reason):
    result = impl.product_decline(rules[product_id], channel, mcc, amount_minor, "m-1")
    assert result == reason
    assert type(result) is type(reason)  # a DeclineReason, or the int 0


@pytest.mark.parametrize(("product_id", "channel", "mcc", "amount_minor", "reason"), DECLINE_ROWS)
def test_authorize_carries_the_decline(impl, rules, product_id, channel, mcc, amount_minor, reason):
    request = authorize_request(
        product_id=product_id,
        channel=impl.CHANNEL_NAMES.index(channel),
        mcc=mcc,
        amount_minor=amount_minor,
    )
    _, args = impl.plan_authorize(request, rules, PARTITIONS)
    assert args[RESERVE.args.rule_decline] == str(int(reason))


def test_decline_reasons_covered_in_order():
    reasons = [row[-1] for row in DECLINE_ROWS[:5]]
    assert reasons == sorted(reasons)
    assert set(reasons) == {
        DeclineReason.CHANNEL_NOT_ALLOWED,
        DeclineReason.MCC_NOT_ALLOWED,
        DeclineReason.AMOUNT_BELOW_MINIMUM,
        DeclineReason.AMOUNT_ABOVE_MAXIMUM,
    }


# plan_capture and plan_void

HOLD_ID = f"007-{TOKEN}"
HOLD_NOT_OURS = "not a hold id issued by this gateway"
BAD_HOLD_IDS = [
    ("", "required"),
    ("0" * (ID_LENGTH_MAX + 1), f"must be at most {ID_LENGTH_MAX} characters"),
    (f"007 {TOKEN}", BAD_CHARACTER),
    (f"007-{TOKEN[:-1]}|", BAD_CHARACTER),
    (f"007{TOKEN}", HOLD_NOT_OURS),  # no separator
    (f"007_{TOKEN}", HOLD_NOT_OURS),  # another separator
    (f"7-{TOKEN}", HOLD_NOT_OURS),  # partition not three digits
    (f"0007-{TOKEN}", HOLD_NOT_OURS),
    (f"07a-{TOKEN}", HOLD_NOT_OURS),
    (f"-007{TOKEN}", HOLD_NOT_OURS),
    (f"007-{TOKEN[:-1]}", HOLD_NOT_OURS),  # token too short
    (f"007-{TOKEN}Q", HOLD_NOT_OURS),  # token too long
    (f"256-{TOKEN}", HOLD_NOT_OURS),  # partition >= partitions
    (f"999-{TOKEN}", HOLD_NOT_OURS),
]
PLANS = {
    "capture": lambda impl, request, partitions: impl.plan_capture(request, partitions),
    "void": lambda impl, request, partitions: impl.plan_void(request, partitions),
}


def hold_request(kind: str, **changes):
    if kind == "capture":
        fields = {"idempotency_key": "cap-1", "hold_id": HOLD_ID, "amount_minor": 500}
        return pb.CaptureRequest(**{**fields, "final": True, **changes})
    return pb.VoidRequest(**{"idempotency_key": "void-1", "hold_id": HOLD_ID, **changes})


@pytest.mark.parametrize("kind", PLANS)
@pytest.mark.parametrize(("value", "message"), BAD_IDS)
def test_hold_plan_rejects_bad_idempotency_key(impl, kind, value, message):
    request = hold_request(kind, idempotency_key=value, hold_id="")
    assert_invalid(lambda: PLANS[kind](impl, request, PARTITIONS), "idempotency_key", message)


@pytest.mark.parametrize("kind", PLANS)
@pytest.mark.parametrize(("value", "message"), BAD_HOLD_IDS)
def test_hold_plan_rejects_bad_hold_id(impl, kind, value, message):
    request = hold_request(kind, hold_id=value)
    assert_invalid(lambda: PLANS[kind](impl, request, PARTITIONS), "hold_id", message)


@pytest.mark.parametrize("kind", PLANS)
def test_hold_plan_knows_only_its_partitions(impl, kind):
    request = hold_request(kind, hold_id=f"008-{TOKEN}")
    assert_invalid(lambda: PLANS[kind](impl, request, 8), "hold_id", HOLD_NOT_OURS)
    assert PLANS[kind](impl, request, 9)[1][0] == "cg:{p:008}:"


@pytest.mark.parametrize(
    ("amount_minor", "message"),
    [
        (0, "must be greater than 0 (integer minor units)"),
        (-1, "must be greater than 0 (integer minor units)"),
        (AMOUNT_MINOR_MAX + 1, f"must be at most {AMOUNT_MINOR_MAX}"),
    ],
)
def test_capture_rejects_bad_amount(impl, amount_minor, message):
    request = hold_request("capture", amount_minor=amount_minor)
    assert_invalid(lambda: impl.plan_capture(request, PARTITIONS), "amount_minor", message)


def test_capture_checks_hold_id_before_amount(impl):
    request = hold_request("capture", hold_id="nope", amount_minor=0)
    assert_invalid(lambda: impl.plan_capture(request, PARTITIONS), "hold_id", HOLD_NOT_OURS)


@pytest.mark.parametrize(("final", "flag"), [(True, "1"), (False, "0")])
def test_capture_plan(impl, final, flag):
    keys, args = impl.plan_capture(hold_request("capture", final=final), PARTITIONS)
    assert keys == [
        "cg:{p:007}:h:007-ABCDEFGHIJKLMNOP",
        "cg:{p:007}:ic:007-ABCDEFGHIJKLMNOP|cap-1",
        "cg:{p:007}:due",
        "cg:{p:007}:outbox",
    ]
    assert args == [
        "cg:{p:007}:",
        "007-ABCDEFGHIJKLMNOP",
        fingerprint("capture", "500", flag),
        "500",
        flag,
    ]


def test_void_plan(impl):
    keys, args = impl.plan_void(hold_request("void"), PARTITIONS)
    assert keys == [
        "cg:{p:007}:h:007-ABCDEFGHIJKLMNOP",
        "cg:{p:007}:iv:007-ABCDEFGHIJKLMNOP|void-1",
        "cg:{p:007}:due",
        "cg:{p:007}:outbox",
    ]
    assert args == ["cg:{p:007}:", "007-ABCDEFGHIJKLMNOP", fingerprint("void")]


@pytest.mark.parametrize("kind", PLANS)
@pytest.mark.parametrize(
    ("hold_id", "partitions", "base"),
    [
        (f"000-{TOKEN}", 1, "cg:{p:000}:"),
        (f"255-{TOKEN}", 256, "cg:{p:255}:"),
        (f"999-{TOKEN}", 1000, "cg:{p:999}:"),
        ("042-ABCDEFGH-JKLMNOP", 256, "cg:{p:042}:"),  # keys.partition_of_hold allows a '-'
    ],
)
def test_hold_plan_bases(impl, kind, hold_id, partitions, base):
    keys, args = PLANS[kind](impl, hold_request(kind, hold_id=hold_id), partitions)
    script = contracts.SCRIPTS[kind]
    assert args[script.args.base] == base and args[script.args.hold_id] == hold_id
    assert keys[script.keys.hold] == f"{base}h:{hold_id}"


def test_fingerprint(impl):
    assert impl.fingerprint("a", "b") == fingerprint("a", "b")
    assert impl.fingerprint() == hashlib.blake2b(b"", digest_size=8).hexdigest()
    assert len(impl.fingerprint("void")) == 16


def test_rules_survive_pickling(impl, rules):
    copies = pickle.loads(pickle.dumps(rules))
    request = authorize_request()
    assert impl.plan_authorize(request, copies, PARTITIONS) == impl.plan_authorize(
        request, rules, PARTITIONS
    )
    assert impl.product_decline(copies["cash"], "cash", "5411", 50_000, "m-1") == 5


def test_the_rules_text_carries_the_catalog_version(impl, catalog):
    rules = impl.compile_products(catalog, "2026-12-06.9")
    _, args = impl.plan_authorize(authorize_request(), rules, PARTITIONS)
    assert args[-1].split("|")[-2] == "2026-12-06.9"
