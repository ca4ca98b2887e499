"""Malformed messages: bytes that are not a valid request (garbage, truncated, a string field
that is not UTF-8) are INVALID_ARGUMENT naming the request type and the problem, for every
method, counted like any failure, with no traceback logged; nothing changes and the server
keeps serving."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2

from creditgate.gateway import errors
from creditgate.gateway.pb import creditgate_pb2 as pb
from tests.conftest import CUSTOMER_CAPS, snapshot
from tests.gateway.test_rich_errors import detail, details_of

METHODS = [(service.full_name, method)
           for service in pb.DESCRIPTOR.services_by_name.values()
           for method in service.methods]
LENGTH_DELIMITED = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES,
                    FieldDescriptor.TYPE_MESSAGE)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) holding `payload`."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def bad_utf8(descriptor: Descriptor) -> bytes | None:
    """A message of `descriptor`'s type whose first string field (nested if need be) holds a
    byte that is not UTF-8."""
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return _field(field.number, b"ok\xff")
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            inner = bad_utf8(field.message_type)
            if inner is not None:
                return _field(field.number, inner)
    return None


def truncated(descriptor: Descriptor) -> bytes:
    """A length-delimited field that announces more bytes than the message has."""
    number = next(field.number for field in descriptor.fields if field.type in LENGTH_DELIMITED)
    return _varint(number << 3 | 2) + b"\x05ab"


CASES = [pytest.param(service, method, kind, id=f"{method.name}-{kind}")
         for service, method in METHODS for kind in ("garbage", "truncated", "bad-utf8")]


def body(method, kind: str) -> bytes:
    if kind == "garbage":
        return b"\xff\xff\xff\xff\xff"
    if kind == "truncated":
        return truncated(method.input_type)
    data = bad_utf8(method.input_type)
    assert data is not None, f"{method.input_type.full_name} has no string field"
    return data


@pytest.mark.parametrize(("service", "method", "kind"), CASES)
async def test_malformed_request_is_invalid_argument(channel, redis, caplog, service, method,
                                                     kind):
    caplog.set_level(logging.DEBUG)
    raw = channel.unary_unary(f"/{service}/{method.name}")  # bytes in, bytes out
    before, counted = await snapshot(redis), errors.counts.copy()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(body(method, kind))
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    prefix = f"request: not a valid {method.input_type.full_name}: "
    assert error.details().startswith(prefix), error.details()
    if kind == "bad-utf8":
        assert "UTF-8" in error.details()
    violation, = detail(details_of(error), error_details_pb2.BadRequest).field_violations
    assert violation.field == "request"
    assert errors.counts - counted == {"INVALID_ARGUMENT": 1}
    assert [record for record in caplog.records
            if record.exc_info or record.levelno >= logging.WARNING] == []
    assert await snapshot(redis) == before


async def test_the_server_keeps_serving_after_malformed_calls(channel, admin):
    raw = channel.unary_unary("/creditgate.v1.Admin/PutCustomer")
    for _ in range(20):
        with pytest.raises(grpc.aio.AioRpcError):
            await raw(b"\x0a\xff")
    reply = await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="c-after", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
    assert reply.customer_id == "c-after"


async def test_valid_bytes_are_served_as_the_stub_serves_them(channel, admin):
    await admin.PutCustomer(pb.PutCustomerRequest(
        customer_id="c-raw", status=pb.CUSTOMER_STATUS_ACTIVE, caps_minor=CUSTOMER_CAPS))
    raw = channel.unary_unary("/creditgate.v1.Admin/GetCustomer")
    reply = pb.Customer.FromString(
        await raw(pb.GetCustomerRequest(customer_id="c-raw").SerializeToString()))
    assert (reply.customer_id, dict(reply.caps_minor)) == ("c-raw", CUSTOMER_CAPS)
