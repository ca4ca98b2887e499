"""A metadata value that is not valid UTF-8 (an API key with one bad byte), sent as raw
HTTP/2 because gRPC clients refuse to: the call is refused, the gateway keeps serving, and
the log holds neither the value nor a line per call."""

from __future__ import annotations

import asyncio
import logging
import struct

import grpc

from creditgate.gateway.pb import creditgate_pb2 as pb
from tests.support import api_key

SECRET_KEY = api_key("SHOP-7", "undecodable-s3cret")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, DATA, SETTINGS = 0x1, 0x0, 0x4
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman (short strings)."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def call_with_key(port: int, stream: int, key: bytes) -> bytes:
    block = b"".join(literal(name, value) for name, value in (
        (b":method", b"POST"), (b":scheme", b"http"),
        (b":path", b"/creditgate.v1.Admin/GetCustomer"),
        (b":authority", f"127.0.0.1:{port}".encode()),
        (b"content-type", b"application/grpc"), (b"te", b"trailers"),
        (b"x-api-key", key)))
    message = pb.GetCustomerRequest(customer_id="c-1").SerializeToString()
    body = b"\x00" + struct.pack(">I", len(message)) + message
    return frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, END_STREAM, stream, body)


async def test_an_undecodable_api_key_is_refused_and_never_logged(gateway, admin, caplog):
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(PREFACE + frame(SETTINGS, 0, 0, b""))
    for number in range(50):
        writer.write(call_with_key(gateway.port, 2 * number + 1, SECRET_KEY.encode() + b"\xff"))
    await writer.drain()
    received = b""
    try:
        while len(received) < 2_000:
            chunk = await asyncio.wait_for(reader.read(65_536), timeout=2)
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        pass
    writer.close()
    assert received  # the server answered (refusals), and did not fall over
    # Still serving.
    try:
        await admin.GetCustomer(pb.GetCustomerRequest(customer_id="nobody"), timeout=5)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
    lines = [record.getMessage() for record in caplog.records]
    assert not [line for line in lines if "undecodable-s3cret" in line]
    grpc_lines = [record for record in caplog.records if record.name == "grpc._cython.cygrpc"]
    assert len(grpc_lines) <= 2, [record.getMessage() for record in grpc_lines]
    assert all(record.exc_info is None for record in grpc_lines)
