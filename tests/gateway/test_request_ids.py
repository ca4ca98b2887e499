"""Every answer names itself: the caller's x-request-id comes back in the trailing metadata
(of an answer and of a refusal alike), a missing or malformed one is replaced by one the
gateway makes, and the call's log lines carry the request id and the traceparent's trace id."""

from __future__ import annotations

import logging
import re

import grpc
import pytest
import pytest_asyncio
from grpc_status import rpc_status

from creditgate.gateway import errors, logs
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.gateway.pb import creditgate_pb2_grpc as pb_grpc
from tests.conftest import served_gateway
from tests.gateway.test_metrics import WATCHER_KEY, callers_file
from tests.support import authorize_request

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
MADE = re.compile(r"[0-9a-f]{12}-[0-9a-f]+")


@pytest_asyncio.fixture
async def auth(redis, redis_server, tmp_path):
    async with served_gateway(redis_server,
                              callers_path=callers_file(tmp_path / "callers.toml")) as served, \
            grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        yield pb_grpc.AuthorizationStub(channel)


async def echoed(call) -> tuple[str, grpc.StatusCode, grpc.aio.Metadata]:
    """The x-request-id the call's answer carried, its status, its trailing metadata."""
    try:
        await call
        code = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        code = error.code()
    trailing = await call.trailing_metadata()
    initial = await call.initial_metadata()
    assert errors.REQUEST_ID_KEY not in initial  # trailing only: see gateway/errors.py
    return trailing.get(errors.REQUEST_ID_KEY), code, trailing


async def test_a_callers_request_id_is_echoed(auth):
    request_id, code, _ = await echoed(auth.Authorize(
        authorize_request("r-1", "nobody", 1_000), metadata=(("x-request-id", "till-7/0042"),)))
    assert (request_id, code) == ("till-7/0042", grpc.StatusCode.OK)


async def test_a_request_id_is_made_when_none_is_given(auth):
    first, _, _ = await echoed(auth.Authorize(authorize_request("r-2", "nobody", 1_000)))
    second, _, _ = await echoed(auth.Authorize(authorize_request("r-3", "nobody", 1_000)))
    assert MADE.fullmatch(first) and MADE.fullmatch(second) and first != second


@pytest.mark.parametrize("given", ["x" * 65, "has space", " "])
async def test_a_malformed_request_id_is_replaced(auth, given):
    request_id, code, _ = await echoed(auth.Authorize(
        authorize_request("r-4", "nobody", 1_000), metadata=(("x-request-id", given),)))
    assert code == grpc.StatusCode.OK
    assert MADE.fullmatch(request_id), request_id


async def test_refusals_carry_the_request_id_beside_their_details(auth):
    # PERMISSION_DENIED (refused before the request is read) and INVALID_ARGUMENT (after):
    # both keep their google.rpc details.
    for call, code in ((auth.Authorize(authorize_request("r-5", "c", 1_000), metadata=(
            ("x-api-key", WATCHER_KEY), ("x-request-id", "denied-1"))),
                        grpc.StatusCode.PERMISSION_DENIED),
                       (auth.Authorize(authorize_request("r-6", "", 1_000),
                                       metadata=(("x-request-id", "bad-1"),)),
                        grpc.StatusCode.INVALID_ARGUMENT)):
        request_id, got, trailing = await echoed(call)
        assert got == code
        assert request_id == ("denied-1" if code == grpc.StatusCode.PERMISSION_DENIED
                              else "bad-1")
        assert "grpc-status-details-bin" in trailing
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert rpc_status.from_call(caught.value).details


async def test_the_calls_log_lines_name_the_request_and_trace(auth):
    seen: list[tuple[str, str, str]] = []

    class Remember(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.getMessage(), logs.REQUEST_ID.get(), logs.TRACE_ID.get()))

    handler = Remember(level=logging.INFO)
    logging.getLogger("creditgate").addHandler(handler)
    try:
        # A refused caller is logged inside the call, so with its ids (once per interval and
        # kind: a kind no other test causes).
        await echoed(auth.Void(pb.VoidRequest(idempotency_key="v-1", hold_id="h"), metadata=(
            ("x-api-key", WATCHER_KEY), ("x-request-id", "traced-1"),
            ("traceparent", TRACEPARENT))))
    finally:
        logging.getLogger("creditgate").removeHandler(handler)
    lines = [line for line in seen if "PERMISSION_DENIED" in line[0]]
    assert lines and all(ids == ["traced-1", TRACE] for _, *ids in lines), seen
    assert (logs.REQUEST_ID.get(), logs.TRACE_ID.get()) == ("", "")  # not beyond the call


@pytest.mark.parametrize("traceparent, trace", [
    (TRACEPARENT, TRACE),
    (f"01-{TRACE}-00f067aa0ba902b7-01-future-fields", TRACE),  # a later version adds fields
    (f"00-{TRACE}-00f067aa0ba902b7-01-extra", ""),  # version 00 has exactly four
    (f"ff-{TRACE}-00f067aa0ba902b7-01", ""),  # version ff is invalid
    (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", ""),  # lower-case hex only
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", ""),  # all-zero trace id
    (f"00-{TRACE}-{'0' * 16}-01", ""),  # all-zero parent id
    (f"00-{TRACE[:-1]}-00f067aa0ba902b7-01", ""),
    ("", ""),
])
def test_trace_ids_follow_w3c_trace_context(traceparent, trace):
    assert errors.name_call([("traceparent", traceparent)])[1] == trace


def test_request_ids_are_visible_ascii_up_to_the_bound():
    assert errors.name_call([("x-request-id", "a" * 64)])[0] == "a" * 64
    assert errors.name_call([("x-request-id", "~!{}")])[0] == "~!{}"
    for bad in ("a" * 65, "a b", "", "é"):
        assert MADE.fullmatch(errors.name_call([("x-request-id", bad)])[0])
    assert MADE.fullmatch(errors.name_call(None)[0])
