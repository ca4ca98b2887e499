"""Per-caller quotas on a real gateway and Redis: a caller over its rate is refused at once
with RESOURCE_EXHAUSTED naming it, before any Redis work, while another caller's calls are
served as before (measured side by side: its approvals and latency alone and during the
storm)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from creditgate.gateway import callers
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from tests.conftest import CUSTOMER_CAPS, served_gateway
from tests.support import api_key, authorize_request

NOISY_KEY = api_key("NOISY", "key-of-a-broken-terminal")
CALM_KEY = api_key("CALM", "key-of-a-working-terminal")
NOISY_RATE, NOISY_BURST = 20.0, 20
STORM_CALLS = 300


def callers_file(path) -> str:
    path.write_text(f"""
[callers.NOISY]
role = "acquirer"
api_key_sha256 = "{callers.api_key_hash(NOISY_KEY)}"
merchants = ["*"]
rate_per_s = {NOISY_RATE}
burst = {NOISY_BURST}

[callers.CALM]
role = "acquirer"
api_key_sha256 = "{callers.api_key_hash(CALM_KEY)}"
merchants = ["*"]

[callers.SETUP]
role = "backoffice"
identity = "insecure:loopback"
""")
    return str(path)


@pytest_asyncio.fixture
async def keyed_gateway(redis, redis_server, tmp_path):
    async with served_gateway(redis_server,
                              callers_path=callers_file(tmp_path / "callers.toml")) as served:
        yield served


async def script_calls(redis) -> int:
    stats = await redis.info("commandstats")
    return sum(value["calls"] for name, value in stats.items()
               if name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall"))


async def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    try:
        outcome = await call
    except grpc.aio.AioRpcError as error:
        outcome = error
    return time.perf_counter() - started, outcome


async def test_a_caller_over_its_rate_is_refused_fast_and_another_is_unaffected(
        keyed_gateway, redis, caplog):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{keyed_gateway.port}") as channel:
        admin, auth = pb_grpc.AdminStub(channel), pb_grpc.AuthorizationStub(channel)
        for customer in ("noisy-c", "calm-c"):
            await admin.PutCustomer(pb.PutCustomerRequest(
                customer_id=customer, status=pb.CUSTOMER_STATUS_ACTIVE,
                caps_minor=CUSTOMER_CAPS))

        def calm(i: int, prefix: str):
            return auth.Authorize(authorize_request(f"{prefix}-{i}", "calm-c", 100),
                                  metadata=(("x-api-key", CALM_KEY),), timeout=10)

        alone = [await timed(calm(i, "alone")) for i in range(20)]
        scripts_before = await script_calls(redis)
        storm_started = time.perf_counter()

        async def broken_terminal() -> list:
            # A retry loop: a call every 2 ms, never waiting for the answers.
            calls = []
            for i in range(STORM_CALLS):
                calls.append(asyncio.ensure_future(timed(auth.Authorize(
                    authorize_request(f"n-{i}", "noisy-c", 100),
                    metadata=(("x-api-key", NOISY_KEY),), timeout=10))))
                await asyncio.sleep(0.002)
            return await asyncio.gather(*calls)

        async def working_terminal() -> list:
            await asyncio.sleep(0.05)  # inside the storm
            return [await timed(calm(i, "storm")) for i in range(20)]

        noisy_results, storm = await asyncio.gather(broken_terminal(), working_terminal())
        storm_s = time.perf_counter() - storm_started
        scripts_after = await script_calls(redis)

    refused = [(took, outcome) for took, outcome in noisy_results
               if isinstance(outcome, grpc.aio.AioRpcError)]
    served = [outcome for _, outcome in noisy_results
              if not isinstance(outcome, grpc.aio.AioRpcError)]
    # The burst, and what the rate adds while the storm lasts, were served; the rest refused.
    assert NOISY_BURST <= len(served) <= NOISY_BURST + NOISY_RATE * storm_s + 1
    assert {error.code() for _, error in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    status = rpc_status.from_call(refused[0][1])
    failure = error_details_pb2.QuotaFailure()
    assert any(detail.Unpack(failure) for detail in status.details
               if detail.Is(failure.DESCRIPTOR))
    assert failure.violations[0].subject == "caller:NOISY"
    # No Redis work for a refusal: one script per call served, nothing for the refused.
    assert scripts_after - scripts_before == len(served) + len(storm)
    # The calm caller: every call approved, alone and beside the storm (40 in all: the
    # product allows 50 a day).
    for _, answer in alone + storm:
        assert not isinstance(answer, grpc.aio.AioRpcError) and answer.approved, answer
    # The refusals are one log line (for the interval) that names the caller.
    said = [record.getMessage() for record in caplog.records if "QuotaExceeded" in
            record.getMessage()]
    assert said == ["Authorize failed: RESOURCE_EXHAUSTED (QuotaExceeded, caller NOISY)"]
    median = sorted(took for took, _ in alone)[len(alone) // 2]
    storm_median = sorted(took for took, _ in storm)[len(storm) // 2]
    refused_median = sorted(took for took, _ in refused)[len(refused) // 2]
    print(f"calm caller p50 alone {median * 1000:.2f} ms, beside the storm "
          f"{storm_median * 1000:.2f} ms; noisy refusals p50 {refused_median * 1000:.2f} ms "
          f"({len(refused)} refused, {len(served)} served)")
