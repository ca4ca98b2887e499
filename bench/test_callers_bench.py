"""What asking "who calls, and may it?" costs per call, in the gateway's own Python: identity
from a verified certificate SAN, from an API key, and the plaintext loopback identity, each
with the role, quota and scope checks of an Authorize (gateway/errors.py `identify`, then
`Caller.check`).

Run with `make bench` (pytest bench --benchmark-enable), or only these with
`.venv/bin/python -m pytest bench/test_callers_bench.py --benchmark-enable`. The context is a
stand-in for grpc's ServicerContext that answers `auth_context()` and `invocation_metadata()`
from prepared values, so what is measured is creditgate's own work; reading the real auth
context is gRPC's (bench/mtls_cost.py measures the whole call with mTLS on and off).
"""

from __future__ import annotations

import pytest

from creditgate.gateway import callers, errors
from creditgate.gateway.pb import creditgate_pb2 as pb

URI = "spiffe://acquirer.example/terminal/T-0001"
KEY = "SHOP-1.0d5f6c1e-7a41-4a0f-9b61-2f1c3a9e5b77"
CALLERS = callers.parse(f"""
[callers.T-0001]
role = "terminal"
identity = "{URI}"
merchants = ["mer-310115-000482", "CHAIN-*"]
channels = ["qr_scan", "pos"]
products = ["scan_pay"]
rate_per_s = 1000000.0
burst = 1000000

[callers.SHOP-1]
role = "terminal"
api_key_sha256 = "{callers.api_key_hash(KEY)}"
merchants = ["mer-310115-000482"]
rate_per_s = 1000000.0
burst = 1000000

[callers.LOCAL]
role = "acquirer"
identity = "insecure:loopback"
merchants = ["*"]
rate_per_s = 1000000.0
burst = 1000000
""")
REQUEST = pb.AuthorizeRequest(
    idempotency_key="pos-0d5f6c1e-7a41-4a0f-9b61-2f1c3a9e5b77", customer_id="cust-8842017731",
    product_id="scan_pay", channel=pb.CHANNEL_QR_SCAN, merchant_id="mer-310115-000482",
    mcc="5411", amount_minor=12_850, currency="CNY")
GRPC_METADATA = (("user-agent", "grpc-python/1.76"), ("grpc-accept-encoding", "gzip"))


class Context:
    """The two questions `identify` asks of a call, answered from prepared values."""

    def __init__(self, auth: dict[str, list[bytes]], metadata: tuple):
        self.auth, self.metadata = auth, metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self.auth

    def invocation_metadata(self) -> tuple:
        return self.metadata


TLS = {"transport_security_type": [b"ssl"], "peer_uri": [URI.encode()],
       "x509_subject_alternative_name": [URI.encode()]}
CASES = {
    "certificate": Context(TLS, GRPC_METADATA),
    "api-key": Context({"transport_security_type": [b"ssl"]},
                       (*GRPC_METADATA, ("x-api-key", KEY))),
    "loopback": Context({"transport_security_type": [b"insecure"]}, GRPC_METADATA),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_identify_and_check_an_authorize(benchmark, case):
    context = CASES[case]

    def ask() -> None:
        caller = errors.identify(CALLERS, "Authorize", context, context.invocation_metadata())
        caller.check("Authorize", REQUEST)

    benchmark.group = "who calls, per Authorize"
    # Rounds of 50 calls, so the timer's own cost is spread thin.
    benchmark.pedantic(ask, rounds=2_000, iterations=50, warmup_rounds=100)
    assert errors.identify(CALLERS, "Authorize", context, context.metadata).name in (
        "T-0001", "SHOP-1", "LOCAL")
