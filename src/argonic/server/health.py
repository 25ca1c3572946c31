"""The standard ``grpc.health.v1.Health`` service (Check and Watch).

grpcio-health-checking is not a dependency (its current releases need protobuf 7), so the
two tiny messages are built at run time in a private descriptor pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from argonic.server.wire import Malformed, lenient

SERVICE_NAME = "grpc.health.v1.Health"
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3


def _messages() -> tuple[type, type]:
    f = descriptor_pb2.FileDescriptorProto(
        name="argonic/grpc_health_v1.proto", package="grpc.health.v1", syntax="proto3"
    )
    req = f.message_type.add(name="HealthCheckRequest")
    req.field.add(
        name="service",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    resp = f.message_type.add(name="HealthCheckResponse")
    enum = resp.enum_type.add(name="ServingStatus")
    for i, name in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        enum.value.add(name=name, number=i)
    resp.field.add(
        name="status",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_ENUM,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.health.v1.{m}"))
        for m in ("HealthCheckRequest", "HealthCheckResponse")
    )  # type: ignore[return-value]


HealthCheckRequest, HealthCheckResponse = _messages()


def health_handler(
    status_of: Callable[[str], int | None], watch_interval_s: float = 0.5
) -> grpc.GenericRpcHandler:
    """A generic handler for Health; ``status_of(service)`` gives a status or None if unknown."""

    async def check(request, context: grpc.aio.ServicerContext):
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        status = status_of(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        return HealthCheckResponse(status=status)

    async def watch(request, context: grpc.aio.ServicerContext) -> AsyncIterator:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        last = -1
        while True:
            status = status_of(request.service)
            status = SERVICE_UNKNOWN if status is None else status
            if status != last:
                last = status
                yield HealthCheckResponse(status=status)
            await asyncio.sleep(watch_interval_s)

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                check,
                request_deserializer=lenient(HealthCheckRequest.FromString, "HealthCheckRequest"),
                response_serializer=HealthCheckResponse.SerializeToString,
            ),
            "Watch": grpc.unary_stream_rpc_method_handler(
                watch,
                request_deserializer=lenient(HealthCheckRequest.FromString, "HealthCheckRequest"),
                response_serializer=HealthCheckResponse.SerializeToString,
            ),
        },
    )
