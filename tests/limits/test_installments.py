"""Installment arithmetic (limits/installments.py) and its Lua reading (installment_plan in
limits/lua/_lib.lua, used by reserve.lua and increment.lua): the installments sum to the
principal, only the first carries the rounding remainder, the fee is the principal's monthly
basis points rounded half up, and the real script computes exactly the Python plan."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditgate import hotpath
from creditgate.limits import calendar, contracts, installments, keys
from creditgate.limits.constants import (
    AMOUNT_MINOR_MAX,
    CAP_MINOR_MAX,
    INSTALLMENT_FEE_BPS_MAX,
    INSTALLMENT_MONTHS_MAX,
)
from creditgate.limits.contracts import call_header
from creditgate.limits.lua_source import library, scripts
from creditgate.limits.model import installment_plan_text
from tests.support import PARTITIONS, RULES, authorize_request

principals = st.integers(1, AMOUNT_MINOR_MAX) | st.integers(1, 10_000)
terms = st.integers(2, INSTALLMENT_MONTHS_MAX)
fees = st.integers(0, INSTALLMENT_FEE_BPS_MAX)


@given(principal=principals, months=terms, fee_bps=fees)
def test_installments_sum_to_the_principal_and_only_the_first_carries_the_remainder(
        principal, months, fee_bps):
    plan = installments.plan(principal, months, fee_bps)
    schedule = [plan.first_installment_minor] + [plan.installment_minor] * (months - 1)
    assert sum(schedule) == principal
    assert plan.first_installment_minor - plan.installment_minor == principal % months
    assert plan.installment_minor == principal // months
    assert all(isinstance(part, int) and part >= 0 for part in schedule)
    # The fee: basis points of the principal, rounded half up to a minor unit, each month.
    exact_fee_times_10000 = principal * fee_bps
    assert abs(plan.fee_per_installment_minor * 10_000 - exact_fee_times_10000) <= 5_000
    if exact_fee_times_10000 % 10_000 == 5_000:
        assert plan.fee_per_installment_minor * 10_000 > exact_fee_times_10000
    assert plan.fee_total_minor == plan.fee_per_installment_minor * months
    assert installments.parse(plan.text(), principal) == plan
    assert installment_plan_text(principal, months, fee_bps) == plan.text()


def test_no_plan_parses_to_none():
    assert installments.parse("", 100) is None


@pytest.mark.parametrize(("principal", "months", "fee_bps", "text"), [
    (100_000, 3, 60, "3:33334:33333:600:60"),
    (2, 3, 0, "3:2:0:0:0"),  # less than one minor unit a month: all of it in the first
    (5, 2, 1_000, "2:3:2:1:1000"),  # half a minor unit of fee rounds up
    (AMOUNT_MINOR_MAX, 60, 1_000, "60:1666666706:1666666666:10000000000:1000"),
])
def test_known_plans(principal, months, fee_bps, text):
    assert installments.plan(principal, months, fee_bps).text() == text


_customers = itertools.count()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(principal=principals, months=terms, fee_bps=fees)
def test_the_lua_plan_equals_the_python_plan(redis_sync, principal, months, fee_bps):
    """The reserve script, given a hand-built plan (any term and fee within the bounds, no
    product rule or window in the way), answers with and stores the Python plan."""
    redis_sync.function_load(library(), replace=True)
    customer_id = f"inst-{next(_customers)}"
    base = keys.base(keys.partition_of(customer_id, PARTITIONS))
    nodes = ("total", "consumer", "consumer.scan_pay", "consumer.scan_pay.pos")
    put_args = contracts.PUT_CUSTOMER.args.pack(
        customer_id=customer_id, status="active", timezone="UTC",
        schedule=calendar.offset_schedule("UTC", 1_795_600_000),
        rest=[text for node in nodes for text in (node, str(CAP_MINOR_MAX))])
    redis_sync.fcall(scripts()["put_customer"].function, 3, keys.customer(base, customer_id),
                    keys.outbox(base), keys.timezones(base), *call_header(), *put_args)
    keys_, args = hotpath.plan_authorize(authorize_request("k", customer_id, 100), RULES,
                                         PARTITIONS)
    a = contracts.RESERVE.args
    rules = contracts.PRODUCT_RULES.bind(args[a.rules].split(contracts.RULES_SEPARATOR))
    rules.day_amount_max_minor = rules.day_count_max = "0"
    rules.month_amount_max_minor = rules.month_count_max = "0"
    rules.amount_min_minor, rules.amount_max_minor = "1", str(AMOUNT_MINOR_MAX)
    rules.installment_fee_bps = str(fee_bps)
    args[a.rules] = contracts.RULES_SEPARATOR.join(
        getattr(rules, name) for name in contracts.PRODUCT_RULES.names)
    args[a.amount_minor] = str(principal)
    args[a.installment_months] = str(months)
    reply = redis_sync.fcall(scripts()["reserve"].function, len(keys_), *keys_, *call_header(),
                            *args).decode()
    f = contracts.AUTHORIZATION.bind(reply.split("|")[1:])
    expected = installments.plan(principal, months, fee_bps).text()
    assert reply.startswith("OK|")
    assert (f.reason, f.approved_amount_minor, f.plan) == ("0", str(principal), expected)
    assert redis_sync.hget(keys.hold(base, f.hold_id), keys.HOLD_FIELDS["PLAN"]).decode() == \
        expected
