"""``inference.GRPCInferenceService`` on tritonclient's generated stubs: a thin layer.

Each method converts the protobuf request (codec.py), calls the data plane and converts
the answer back; ServerError becomes the gRPC status it carries.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from argonic import __version__
from argonic.server.core.dataplane import DataPlane
from argonic.server.core.errorlog import ErrorLog
from argonic.server.errors import InvalidArgument, ServerError
from argonic.server.grpc import codec, wire

SERVICE_FULL_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
EXTENSIONS = [
    "model_repository",
    "model_configuration",
    "schedule_policy",
    "statistics",
    "parameters",
    "binary_tensor_data",
    "system_shared_memory",
]


def _answers_errors(method):
    """Answer a malformed message INVALID_ARGUMENT, a ServerError with its status, anything
    else INTERNAL; every error is counted and logged at a limited rate (errorlog.py)."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            if isinstance(request, wire.Malformed):
                raise InvalidArgument(request.reason)
            return await method(self, request, context)
        except ServerError as exc:
            self.errors.record(f"{method.__name__} {exc.code.name}", str(exc))
            await context.abort(exc.code, str(exc))
        except Exception as exc:  # noqa: BLE001 - the server keeps serving
            kind = f"{method.__name__} INTERNAL {type(exc).__name__}"
            self.errors.record(kind, str(exc), exc)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    return wrapper


_parse_infer = wire.lenient(wire.parse_infer_request, "ModelInferRequest")


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """KServe v2 / Triton gRPC protocol over a DataPlane."""

    def __init__(self, dataplane: DataPlane, errors: ErrorLog | None = None) -> None:
        self.dataplane = dataplane
        self.errors = errors or ErrorLog()

    @_answers_errors
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @_answers_errors
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    @_answers_errors
    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.dataplane.is_ready(request.name, request.version))

    @_answers_errors
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="argonic", version=__version__, extensions=EXTENSIONS)

    @_answers_errors
    async def ModelMetadata(self, request, context):
        return codec.metadata_response(self.dataplane.selected(request.name, request.version))

    @_answers_errors
    async def ModelConfig(self, request, context):
        return codec.config_response(self.dataplane.model(request.name, request.version))

    @_answers_errors
    async def ModelInfer(self, messages: AsyncIterator[bytes], context):
        """Registered stream-unary: its one message is read once admitted (limits.py)."""
        admission = self.dataplane.admission
        trace = self.dataplane.begin_trace(context.invocation_metadata(), "grpc")
        async with admission.receive(messages) as data:
            request = _parse_infer(data)
            if isinstance(request, wire.Malformed):
                raise InvalidArgument(request.reason)
            expands = codec.request_bytes(request.message, request.nbytes) - request.nbytes
            with admission.admit(expands):  # compressed tensors: room for what they expand to
                decoded = codec.infer_request(request.message, request.raw)
                return codec.infer_response(await self.dataplane.infer(decoded, trace))

    async def ModelStreamInfer(
        self, request_iterator, context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for request in request_iterator:
            try:
                if isinstance(request, wire.Malformed):
                    raise InvalidArgument(request.reason)
                size = codec.request_bytes(request, request.ByteSize())
                with self.dataplane.admission.admit(size):
                    response = codec.infer_response(
                        await self.dataplane.infer(codec.infer_request(request))
                    )
                yield pb.ModelStreamInferResponse(infer_response=response.to_message())
            except Exception as exc:  # noqa: BLE001 - errors travel in the stream, as Triton's
                code = exc.code.name if isinstance(exc, ServerError) else "INTERNAL"
                self.errors.record(
                    f"ModelStreamInfer {code}", str(exc), None if code != "INTERNAL" else exc
                )
                named = not isinstance(request, wire.Malformed)
                yield pb.ModelStreamInferResponse(
                    error_message=str(exc),
                    infer_response=pb.ModelInferResponse(
                        model_name=request.model_name if named else "",
                        id=request.id if named else "",
                    ),
                )

    @_answers_errors
    async def ModelStatistics(self, request, context):
        pairs = self.dataplane.statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(
            model_stats=[v.stats.to_proto(n, str(v.version)) for n, v in pairs]
        )

    @_answers_errors
    async def RepositoryIndex(self, request, context):
        return codec.index_response(self.dataplane.index(request.ready))

    @_answers_errors
    async def RepositoryModelLoad(self, request, context):
        self.dataplane.check_control()
        await self.dataplane.load(request.model_name, request.parameters)
        return pb.RepositoryModelLoadResponse()

    @_answers_errors
    async def RepositoryModelUnload(self, request, context):
        self.dataplane.check_control()
        await self.dataplane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @_answers_errors
    async def SystemSharedMemoryStatus(self, request, context):
        regions = self.dataplane.shared_memory.status(request.name)
        Status = pb.SystemSharedMemoryStatusResponse.RegionStatus  # noqa: N806
        return pb.SystemSharedMemoryStatusResponse(
            regions={r["name"]: Status(**r) for r in regions}
        )

    @_answers_errors
    async def SystemSharedMemoryRegister(self, request, context):
        self.dataplane.shared_memory.register(
            request.name, request.key, request.offset, request.byte_size
        )
        return pb.SystemSharedMemoryRegisterResponse()

    @_answers_errors
    async def SystemSharedMemoryUnregister(self, request, context):
        self.dataplane.shared_memory.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(self, request, context):
        return pb.CudaSharedMemoryStatusResponse()  # no CUDA regions (Register: UNIMPLEMENTED)

    async def CudaSharedMemoryUnregister(self, request, context):
        return pb.CudaSharedMemoryUnregisterResponse()  # clients unregister "all" on exit


HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _unimplemented(name: str):
    async def handler(request, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"argonic does not implement {name}")

    return handler


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register every method of the service (ModelInfer with wire.py's zero-copy codec)."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        implemented = method.name in InferenceServicer.__dict__
        impl = getattr(servicer, method.name) if implemented else _unimplemented(method.name)
        deserialize = getattr(pb, method.input_type.name).FromString
        serialize = getattr(pb, method.output_type.name).SerializeToString
        deserialize = wire.lenient(deserialize, method.input_type.name)
        kind = HANDLER_KINDS[(method.client_streaming, method.server_streaming)]
        if method.name == "ModelInfer":  # raw bytes, read after admission (see ModelInfer)
            deserialize, serialize = None, wire.serialize_infer_response
            kind = grpc.stream_unary_rpc_method_handler
        handlers[method.name] = kind(
            impl, request_deserializer=deserialize, response_serializer=serialize
        )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(service.full_name, handlers)]
    )
