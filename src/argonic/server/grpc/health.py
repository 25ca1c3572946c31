"""The standard ``grpc.health.v1.Health`` service (grpcio-health-checking), following readiness.

Service names: ``""`` and ``inference.GRPCInferenceService`` are SERVING while the server
is ready (not draining, every start-up model loaded); a model's name is SERVING while the
model is loaded. Check reads the live state; Watch streams changes (polled every
``interval_s``). When draining begins every service turns NOT_SERVING for good.
grpcio-health-checking is pinned to 1.81.1, the newest release that needs protobuf < 7.

Requests that do not parse get INVALID_ARGUMENT (the library's servicer behind lenient
deserializers, as every other RPC of the server). ``check`` is the client side, used by
``argonic health``, the cluster and the Slurm scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio

from argonic.server.grpc.wire import Malformed, lenient

HealthCheckRequest = health_pb2.HealthCheckRequest
HealthCheckResponse = health_pb2.HealthCheckResponse
SERVING = HealthCheckResponse.SERVING
NOT_SERVING = HealthCheckResponse.NOT_SERVING
SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class ServerHealth(aio.HealthServicer):
    """Health whose statuses come from ``statuses()`` (service name -> status)."""

    def __init__(self, statuses: Callable[[], dict[str, int]], interval_s: float = 0.25) -> None:
        super().__init__()
        self._statuses = statuses
        self._interval_s = interval_s
        self._follower: asyncio.Task | None = None

    async def sync(self) -> None:
        """Copy the current statuses in (wakes the Watch streams of those that changed)."""
        for service, status in self._statuses().items():
            if self._server_status.get(service) != status:
                await self.set(service, status)

    async def Check(self, request, context):  # noqa: N802 - the RPC's name
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        await self.sync()
        return await super().Check(request, context)

    async def Watch(self, request, context):  # noqa: N802 - the RPC's name
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        return await super().Watch(request, context)  # streams with context.write

    def add_to(self, server: grpc.aio.Server) -> None:
        """Register on ``server`` and start following the statuses (call on its event loop)."""
        parse = lenient(HealthCheckRequest.FromString, "HealthCheckRequest")
        answer = HealthCheckResponse.SerializeToString
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    SERVICE_NAME,
                    {
                        "Check": grpc.unary_unary_rpc_method_handler(
                            self.Check, request_deserializer=parse, response_serializer=answer
                        ),
                        "Watch": grpc.unary_stream_rpc_method_handler(
                            self.Watch, request_deserializer=parse, response_serializer=answer
                        ),
                    },
                )
            ]
        )
        self._follower = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        while True:
            await self.sync()
            await asyncio.sleep(self._interval_s)

    async def shutdown(self) -> None:
        """Everything NOT_SERVING from now on; stop following."""
        await self.enter_graceful_shutdown()
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower


def check(target: str, service: str = "", timeout_s: float = 2.0) -> str:
    """The status ``target`` (host:port) reports for ``service``: SERVING, NOT_SERVING,
    SERVICE_UNKNOWN (the server does not know the name) or UNREACHABLE (no answer)."""
    try:
        with grpc.insecure_channel(target) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                HealthCheckRequest(service=service), timeout=timeout_s
            )
    except grpc.RpcError as exc:
        return "SERVICE_UNKNOWN" if exc.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
    return HealthCheckResponse.ServingStatus.Name(response.status)
