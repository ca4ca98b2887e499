"""The `creditgate` CLI's client commands against the in-process gateway."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from google.protobuf import text_format

from creditgate.gateway import cli_client
from creditgate.gateway.pb import creditgate_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


async def cli(gateway, *args: str) -> tuple[int, str, str]:
    """Run `creditgate COMMAND --target <the gateway> --insecure ARGS...` in a subprocess (the
    options belong to the command, before its action); this loop keeps serving."""
    command, *rest = args
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "creditgate.gateway.cli", command,
        "--target", f"127.0.0.1:{gateway.port}", "--insecure", *rest,
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_customer_put_show_and_credit(gateway, admin, auth):
    code, out, err = await cli(gateway, "customer", "put", "cli-1", "--cap", "total=100000",
                               "--cap", "consumer=50000", "--timezone", "Europe/Berlin")
    assert code == 0, err
    put = text_format.Parse(out, pb.Customer())
    assert put.customer_id == "cli-1"
    assert dict(put.caps_minor) == {"total": 100_000, "consumer": 50_000}
    # It really was stored.
    stored = await admin.GetCustomer(pb.GetCustomerRequest(customer_id="cli-1"))
    assert (stored.status, stored.timezone, dict(stored.caps_minor)) == (
        pb.CUSTOMER_STATUS_ACTIVE, "Europe/Berlin", {"total": 100_000, "consumer": 50_000})

    code, out, err = await cli(gateway, "customer", "show", "cli-1")
    assert code == 0, err
    shown = text_format.Parse(out, pb.Customer())
    assert shown == stored
    assert "Europe/Berlin" in out and "consumer" in out and "100000" in out

    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="cli-1", status=pb.CUSTOMER_STATUS_ACTIVE, timezone="Europe/Berlin",
        caps_minor={"total": 100_000, "consumer": 50_000, "consumer.scan_pay": 40_000,
                    "consumer.scan_pay.pos": 30_000}))
    reply = await auth.Authorize(pb.AuthorizeRequest(
        idempotency_key="k", customer_id="cli-1", product_id="scan_pay", channel=pb.CHANNEL_POS,
        merchant_id="m", mcc="5411", amount_minor=12_000, currency="CNY"))
    assert reply.approved
    code, out, err = await cli(gateway, "credit", "cli-1", "--product", "scan_pay")
    assert code == 0, err
    credit = text_format.Parse(out, pb.GetCreditResponse())
    levels = {level.node: level for level in credit.levels}
    assert set(levels) == {"total", "consumer", "consumer.scan_pay", "consumer.scan_pay.pos"}
    assert levels["consumer"].held_minor == 12_000
    assert levels["consumer"].available_minor == 50_000 - 12_000
    assert credit.available_minor == 40_000 - 12_000  # the least of the product's levels
    assert {(v.product_id, v.period) for v in credit.velocity} == {
        ("scan_pay", "day"), ("scan_pay", "month")}


async def test_unknown_customer_exits_non_zero(gateway):
    code, out, err = await cli(gateway, "customer", "show", "nobody")
    assert code != 0
    assert "NOT_FOUND" in err and "customer_id" in err
    assert out == ""


async def test_demo(gateway, auth):
    code, out, err = await cli(gateway, "demo")
    assert code == 0, err
    assert "demo ok" in out
    assert "INVALID_ARGUMENT: amount_minor" in out
    customer_id = out.split()[1].rstrip(":")
    credit = await auth.GetCredit(pb.GetCreditRequest(customer_id=customer_id))
    used = {level.node: level.used_minor for level in credit.levels}
    # The demo's capture, less what billing repaid of it.
    assert used["consumer.scan_pay.pos"] == 120_000 - cli_client.DEMO_REPAY_MINOR
    # Plaintext: one caller for everything, so the terminal's refused call is not tried.
    assert "SetTemporaryRaise: not tried" in out


async def test_bad_cap_exits_non_zero(gateway, admin):
    for bad in ("x", "total=", "total=-5", "total=1.5"):
        code, out, err = await cli(gateway, "customer", "put", "cli-bad", "--cap", bad)
        assert code != 0, bad
        assert bad in err
    code, out, err = await cli(gateway, "customer", "put", "cli-bad", "--cap", "Total=5")
    assert code != 0
    assert "INVALID_ARGUMENT: caps_minor" in err
    code, out, err = await cli(gateway, "customer", "show", "cli-bad")
    assert code != 0  # nothing was created
