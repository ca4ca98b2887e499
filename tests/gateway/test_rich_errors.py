"""Refusals a program can read: INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION and
ALREADY_EXISTS carry google.rpc.Status in `grpc-status-details-bin` (BadRequest naming the
field, QuotaFailure with RetryInfo, PreconditionFailure, ErrorInfo and ResourceInfo), with the
same code and message as the plain status, which stay what they were."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from creditgate.gateway import errors
from creditgate.gateway.pb import creditgate_pb2 as pb
from tests.gateway.test_bad_input import CUSTOMER, _put_customer, authorize_request

DETAILS_KEY = "grpc-status-details-bin"


def details_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a client decodes from a failed call's trailing metadata, checked
    against the call's code and message as grpc_status' from_call checks them."""
    for key, value in error.trailing_metadata() or ():
        if key == DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            assert status.code == error.code().value[0]
            assert status.message == error.details()
            return status
    raise AssertionError(f"no {DETAILS_KEY} in {error.trailing_metadata()!r}")


def detail(status: status_pb2.Status, kind: type[Message]) -> Message:
    found = [kind.FromString(any_.value) for any_ in status.details if any_.Is(kind.DESCRIPTOR)]
    assert len(found) == 1, status
    return found[0]


async def _refused(call, request, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request)
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def test_invalid_argument_names_the_field(auth):
    error = await _refused(auth.Authorize, authorize_request(customer_id="a b"),
                           grpc.StatusCode.INVALID_ARGUMENT)
    assert error.details().startswith("customer_id: ")
    violation, = detail(details_of(error), error_details_pb2.BadRequest).field_violations
    assert violation.field == "customer_id"
    assert error.details() == f"customer_id: {violation.description}"


async def test_a_scripts_invalid_argument_names_the_field_and_the_refusal(admin):
    await _put_customer(admin)
    error = await _refused(admin.SetTemporaryRaise, pb.SetTemporaryRaiseRequest(
        customer_id=CUSTOMER, node="total", raise_minor=1_000, expires_at_ms=1),
        grpc.StatusCode.INVALID_ARGUMENT)
    status = details_of(error)
    violation, = detail(status, error_details_pb2.BadRequest).field_violations
    assert violation.field == "expires_at_ms"
    info = detail(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("RAISE_EXPIRES_IN_PAST", errors.ERROR_DOMAIN)


async def test_resource_exhausted_says_what_ran_out_and_when_to_retry(admin, auth, redis):
    await _put_customer(admin)
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", "1")
    try:
        error = await _refused(auth.Authorize, authorize_request(),
                               grpc.StatusCode.RESOURCE_EXHAUSTED)
    finally:
        await redis.config_set("maxmemory", "0")
    assert error.details() == "limit store is out of memory"
    status = details_of(error)
    violation, = detail(status, error_details_pb2.QuotaFailure).violations
    assert (violation.subject, violation.description) == (errors.LIMIT_STORE, error.details())
    retry = detail(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToMilliseconds() == errors.OUT_OF_MEMORY_RETRY_MS > 0


async def test_failed_precondition_names_the_hold_and_its_state(admin, auth):
    await _put_customer(admin)
    hold_id = (await auth.Authorize(authorize_request())).hold_id
    await auth.Void(pb.VoidRequest(idempotency_key="void-1", hold_id=hold_id))
    error = await _refused(auth.Capture, pb.CaptureRequest(
        idempotency_key="cap-1", hold_id=hold_id, amount_minor=1_000, final=True),
        grpc.StatusCode.FAILED_PRECONDITION)
    assert error.details().startswith("hold_id: the hold was voided at ")
    status = details_of(error)
    violation, = detail(status, error_details_pb2.PreconditionFailure).violations
    assert (violation.type, violation.subject, violation.description) == (
        "HOLD_STATE", hold_id, error.details())
    assert detail(status, error_details_pb2.ErrorInfo).reason == "HOLD_VOIDED"


async def test_already_exists_names_the_reused_key(admin, auth):
    await _put_customer(admin)
    assert (await auth.Authorize(authorize_request(idempotency_key="rich-key"))).approved
    error = await _refused(auth.Authorize,
                           authorize_request(idempotency_key="rich-key", amount_minor=2_000),
                           grpc.StatusCode.ALREADY_EXISTS)
    assert error.details().startswith("idempotency_key: already used")
    status = details_of(error)
    info = detail(status, error_details_pb2.ErrorInfo)
    assert (info.reason, dict(info.metadata)) == ("IDEMPOTENCY_MISMATCH",
                                                  {"field": "idempotency_key"})
    resource = detail(status, error_details_pb2.ResourceInfo)
    assert (resource.resource_type, resource.resource_name) == ("idempotency_key", "rich-key")


async def test_grpc_status_reads_the_details_of_an_aio_call(auth):
    call = auth.Authorize(authorize_request(mcc="12a4"))
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    status = await rpc_status.aio.from_call(call)  # raises if code or message disagree
    violation, = detail(status, error_details_pb2.BadRequest).field_violations
    assert violation.field == "mcc"


async def test_other_codes_carry_no_details(admin):
    error = await _refused(admin.GetCustomer, pb.GetCustomerRequest(customer_id="nobody"),
                           grpc.StatusCode.NOT_FOUND)
    assert error.details() == "customer_id: unknown customer"
    assert DETAILS_KEY not in dict(error.trailing_metadata() or ())
