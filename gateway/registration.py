"""Registers the services' methods with the gRPC server, each taking its request as bytes.

The generated `add_*Servicer_to_server` functions have gRPC parse the request, where a
malformed message fails as UNKNOWN with a traceback in the log. Here every method of the
services in the proto descriptor is registered without a request deserializer: the handler
receives the bytes and parses them inside gateway/errors.py's failure mapping, once, so a bad
body is INVALID_ARGUMENT naming the problem. Responses use the generated serializers.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from creditgate.gateway import errors
from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.hotpath import InvalidArgument


def add_services(server: grpc.aio.Server, authorization_service, admin_service) -> None:
    """Serve every method of creditgate.v1.Authorization and creditgate.v1.Admin."""
    servicers = {"Authorization": authorization_service, "Admin": admin_service}
    for name, servicer in servicers.items():
        service = pb.DESCRIPTOR.services_by_name[name]
        handlers = {method.name: _handler(method, servicer) for method in service.methods}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.full_name, handlers),))
        server.add_registered_method_handlers(service.full_name, handlers)


def _handler(method: MethodDescriptor, servicer) -> grpc.RpcMethodHandler:
    if method.client_streaming or method.server_streaming:
        raise TypeError(f"{method.full_name}: only unary methods are served")
    return grpc.unary_unary_rpc_method_handler(
        errors.from_bytes(getattr(servicer, method.name), parser(method.input_type)),
        response_serializer=GetMessageClass(method.output_type).SerializeToString)


def parser(descriptor: Descriptor) -> Callable[[bytes], Message]:
    """The parse of one request type: its message, or InvalidArgument naming the problem."""
    from_string = GetMessageClass(descriptor).FromString
    name = descriptor.full_name

    def parse(data: bytes) -> Message:
        try:
            return from_string(data)
        except DecodeError as error:
            # upb says "Error parsing message with type '<name>': <problem>".
            problem = str(error).rpartition("': ")[2] or "cannot be parsed"
            raise InvalidArgument("request", f"not a valid {name}: {problem}") from None

    return parse
