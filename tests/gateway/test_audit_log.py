"""The audit log: PutCustomer, SetTemporaryRaise and Repay each write one JSON line to the
logger "creditgate.audit" with the caller, the customer, before and after, and nothing
personal; a refused admin call writes none."""

from __future__ import annotations

import json
import logging

import grpc
import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from tests.conftest import CUSTOMER_CAPS, SUITE_CALLER

HOUR_MS = 3_600_000


def audit_lines(caplog) -> list[dict]:
    return [json.loads(record.getMessage()) for record in caplog.records
            if record.name == "creditgate.audit"]


async def test_admin_changes_write_one_audit_line_each(gateway, admin, auth, caplog):
    suite = SUITE_CALLER
    caplog.set_level(logging.INFO, logger="creditgate.audit")
    first = await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="c-audit", status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Asia/Shanghai",
        caps_minor=CUSTOMER_CAPS))
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="c-audit", status=pb.CUSTOMER_STATUS_FROZEN, timezone="Asia/Shanghai",
        caps_minor={"total": 900_000}))
    now = (await auth.GetCredit(pb.GetCreditRequest(customer_id="c-audit"))).as_of_ms
    raised = await admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
        customer_id="c-audit", node="total", raise_minor=50_000, expires_at_ms=now + HOUR_MS))
    await admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
        customer_id="c-audit", node="total", raise_minor=0))
    hold = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key="a1", customer_id="c-audit", product_id="scan_pay",
        channel=pb.CHANNEL_POS, merchant_id="m-1", mcc="5411", amount_minor=8_000,
        currency="CNY"))
    assert not hold.approved  # frozen: nothing to repay yet
    paid = await admin.Repay(pb.RepayRequest(idempotency_key="p1", customer_id="c-audit",
                                             amount_minor=3_000))

    lines = audit_lines(caplog)
    assert [line["action"] for line in lines] == [
        "put_customer", "put_customer", "set_temporary_raise", "set_temporary_raise", "repay"]
    assert all(line["caller"] == suite and line["customer_id"] == "c-audit" for line in lines)
    assert (lines[0]["before"], lines[0]["after"]) == (
        {"status": "", "caps_minor": {}}, {"status": "active", "caps_minor": CUSTOMER_CAPS})
    assert (lines[1]["before"], lines[1]["after"]) == (
        {"status": "active", "caps_minor": CUSTOMER_CAPS},
        {"status": "frozen", "caps_minor": {"total": 900_000}})
    assert (lines[2]["node"], lines[2]["before"], lines[2]["after"]) == (
        "total", {"raise_minor": 0, "expires_at_ms": 0},
        {"raise_minor": 50_000, "expires_at_ms": now + HOUR_MS})
    assert lines[2]["decided_at_ms"] == raised.decided_at_ms
    assert (lines[3]["before"], lines[3]["after"]) == (
        {"raise_minor": 50_000, "expires_at_ms": now + HOUR_MS},
        {"raise_minor": 0, "expires_at_ms": 0})
    assert (lines[4]["before"], lines[4]["after"], lines[4]["amount_minor"],
            lines[4]["overpaid_minor"]) == (
        {"outstanding_minor": 0}, {"outstanding_minor": 0}, 3_000, paid.overpaid_minor)
    # Ids and amounts only: not the customer's timezone, nothing of the request beyond them.
    assert not any("Asia/Shanghai" in json.dumps(line) for line in lines)
    assert first.timezone == "Asia/Shanghai"


async def test_a_repayment_of_a_balance_logs_what_was_owed(gateway, admin, auth, caplog):
    caplog.set_level(logging.INFO, logger="creditgate.audit")
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="c-owes", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
    hold = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key="a1", customer_id="c-owes", product_id="scan_pay",
        channel=pb.CHANNEL_POS, merchant_id="m-1", mcc="5411", amount_minor=8_000,
        currency="CNY"))
    await auth.Capture(pb.CaptureRequest(idempotency_key="c1", hold_id=hold.hold_id,
                                         amount_minor=8_000, final=True))
    await admin.Repay(pb.RepayRequest(idempotency_key="p1", customer_id="c-owes",
                                      amount_minor=3_000))
    (line,) = [line for line in audit_lines(caplog) if line["action"] == "repay"]
    assert (line["before"], line["after"], line["repaid_minor"]) == (
        {"outstanding_minor": 8_000}, {"outstanding_minor": 5_000}, 3_000)


async def test_a_refused_admin_call_writes_no_audit_line(gateway, admin, caplog):
    caplog.set_level(logging.INFO, logger="creditgate.audit")
    with pytest.raises(grpc.aio.AioRpcError):
        await admin.SetTemporaryRaise(pb.SetTemporaryRaiseRequest(
            customer_id="nobody", node="total", raise_minor=0))
    assert audit_lines(caplog) == []
