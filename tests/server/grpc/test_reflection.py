"""gRPC server reflection: a generic client that knows no proto lists the services and
calls ServerMetadata and ModelReady with descriptors fetched from the server."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVICE = "inference.GRPCInferenceService"


def test_generic_client_lists_and_calls_the_services(tiny_server: str) -> None:
    with grpc.insecure_channel(tiny_server) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {
            SERVICE,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= services
        pool = descriptor_pool.DescriptorPool(database)  # nothing compiled in: all from the server
        service = pool.FindServiceByName(SERVICE)
        assert {"ModelInfer", "ServerMetadata", "SystemSharedMemoryRegister"} <= {
            m.name for m in service.methods
        }

        def call(method_name: str, **fields):
            method = service.methods_by_name[method_name]
            request = message_factory.GetMessageClass(method.input_type)(**fields)
            response = message_factory.GetMessageClass(method.output_type)
            return channel.unary_unary(
                f"/{SERVICE}/{method_name}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=response.FromString,
            )(request, timeout=10)

        assert call("ServerMetadata").name == "argonic"
        assert call("ModelReady", name="emtrkmichelid").ready
