"""The KServe v2 HTTP/REST endpoint (aiohttp), a thin route layer over the same DataPlane.

It runs on the gRPC server's event loop: the same models, batcher, statistics, metrics and
errors. Each handler reads the path and body, calls the data plane (conversions in
rest.py, metadata built by codec.py exactly as for gRPC) and answers JSON; a ServerError
becomes Triton's ``{"error": "..."}`` with the HTTP status Triton uses for its code.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web

from argonic import __version__
from argonic.server.core.dataplane import DataPlane
from argonic.server.core.errorlog import ErrorLog
from argonic.server.errors import InvalidArgument, ServerError
from argonic.server.grpc import codec
from argonic.server.grpc.security import RestrictionTable
from argonic.server.grpc.servicer import EXTENSIONS
from argonic.server.http import rest

log = logging.getLogger("argonic.server")

MAX_BODY_BYTES = 1 << 30  # as gRPC's message limit
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
}
Handler = Callable[[Any, web.Request], Awaitable[web.StreamResponse]]
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(message: str, status: int) -> web.Response:
    """Triton's error body."""
    return web.json_response({"error": message}, status=status)


def _answers_errors(handler: Handler) -> Handler:
    """ServerError -> its HTTP status with Triton's body; anything else -> 500 (and a log)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(self, request)
        except ServerError as exc:
            return error_response(str(exc), _HTTP_STATUS.get(exc.code, 500))
        except Exception as exc:  # noqa: BLE001 - the server keeps serving
            log.exception("HTTP %s %s failed", request.method, request.path)
            return error_response(f"{type(exc).__name__}: {exc}", 500)

    return wrapper


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; an empty body is {}."""
    body = await request.read()
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"failed to parse the request JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return value


def _name_version(request: web.Request) -> tuple[str, str]:
    return request.match_info["name"], request.match_info.get("version", "")


class HttpRoutes:
    """The REST routes of one server."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.dp.ready else 400)

    async def model_ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.dp.is_ready(*_name_version(request)) else 400)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"name": "argonic", "version": __version__, "extensions": EXTENSIONS}
        )

    @_answers_errors
    async def model_metadata(self, request: web.Request) -> web.Response:
        versions = self.dp.selected(*_name_version(request))
        return web.json_response(rest.message_json(codec.metadata_response(versions)))

    @_answers_errors
    async def model_config(self, request: web.Request) -> web.Response:
        config = codec.config_response(self.dp.model(*_name_version(request))).config
        return web.json_response(rest.message_json(config))

    @_answers_errors
    async def infer(self, request: web.Request) -> web.Response:
        name, version = _name_version(request)
        trace = self.dp.begin_trace(request.headers.items(), "http")
        length = request.headers.get(rest.HEADER_LENGTH)
        if length is not None and not length.strip().isdigit():
            raise InvalidArgument(f"{rest.HEADER_LENGTH} must be a non-negative integer")
        decoded = rest.infer_request(
            name, version, await request.read(), None if length is None else int(length)
        )
        response = await self.dp.infer(decoded.request, trace)
        body, header_length = rest.infer_response(response, decoded)
        if header_length is None:
            reply = web.Response(body=body, content_type="application/json")
        else:
            reply = web.Response(
                body=body,
                content_type="application/octet-stream",
                headers={rest.HEADER_LENGTH: str(header_length)},
            )
        if request.headers.get("Accept-Encoding"):
            reply.enable_compression()
        return reply

    @_answers_errors
    async def statistics(self, request: web.Request) -> web.Response:
        pairs = self.dp.statistics(
            request.match_info.get("name", ""), request.match_info.get("version", "")
        )
        stats = [rest.message_json(v.stats.to_proto(n, str(v.version))) for n, v in pairs]
        return web.json_response({"model_stats": stats})

    @_answers_errors
    async def repository_index(self, request: web.Request) -> web.Response:
        ready = (await _json_body(request)).get("ready", False) is True
        entries = rest.message_json(codec.index_response(self.dp.index(ready)))
        return web.json_response(entries.get("models", []))

    @_answers_errors
    async def load(self, request: web.Request) -> web.Response:
        self.dp.check_control()  # --model-control-mode, as for gRPC
        params = (await _json_body(request)).get("parameters")
        await self.dp.load(request.match_info["name"], params)
        return web.Response(status=200)

    @_answers_errors
    async def unload(self, request: web.Request) -> web.Response:
        self.dp.check_control()
        await self.dp.unload(request.match_info["name"])
        return web.Response(status=200)

    # --- system shared memory -----------------------------------------------------------

    @_answers_errors
    async def shm_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.dp.shared_memory.status(request.match_info.get("region", "")))

    @_answers_errors
    async def shm_register(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        key, offset, size = body.get("key"), body.get("offset", 0), body.get("byte_size")
        if not isinstance(key, str) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in (offset, size)
        ):
            raise InvalidArgument("'key' must be a string, 'offset' and 'byte_size' integers")
        self.dp.shared_memory.register(request.match_info["region"], key, offset, size)
        return web.Response(status=200)

    @_answers_errors
    async def shm_unregister(self, request: web.Request) -> web.Response:
        self.dp.shared_memory.unregister(request.match_info.get("region", ""))
        return web.Response(status=200)

    @_answers_errors
    async def cuda_shm(self, request: web.Request) -> web.Response:
        """No CUDA regions: status is empty, unregister succeeds, register is refused."""
        if request.path.endswith("/status"):
            return web.json_response([])
        if request.path.endswith("/unregister"):
            return web.Response(status=200)
        raise ServerError("CUDA shared memory is not supported", grpc.StatusCode.UNIMPLEMENTED)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (no such route, wrong method, body too large) as Triton's body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.reason, exc.status)


def _guarded(
    handler: Route, category: str, table: RestrictionTable | None, errors: ErrorLog
) -> Route:
    """``handler`` behind ``--http-restricted-api``: a request of a restricted category
    without its header gets Triton's 403 before anything reads its body."""
    if table is None or category not in table.by_category:
        return handler

    async def guarded(request: web.Request) -> web.StreamResponse:
        missing = table.missing_header(category, request.headers.items())
        if missing is not None:
            errors.record(f"restricted {category} 403", f"{request.path} without '{missing}'")
            return error_response(f"This API is restricted, expecting header '{missing}'", 403)
        return await handler(request)

    return guarded


def build_app(
    dataplane: DataPlane,
    restricted: RestrictionTable | None = None,
    errors: ErrorLog | None = None,
) -> web.Application:
    """The aiohttp application with every KServe v2 / Triton route, each in its protocol
    category (argonic.server.grpc.security.CATEGORIES) for ``--http-restricted-api``."""
    r = HttpRoutes(dataplane)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
    model = "/v2/models/{name}"
    shm = "/v2/systemsharedmemory"
    routes: list[tuple[str, str, Route, str]] = [
        ("GET", "/v2/health/live", r.live, "health"),
        ("GET", "/v2/health/ready", r.ready, "health"),
        ("GET", "/v2", r.server_metadata, "metadata"),
        ("GET", "/v2/models/stats", r.statistics, "statistics"),
        ("POST", "/v2/repository/index", r.repository_index, "model-repository"),
        ("POST", "/v2/repository/models/{name}/load", r.load, "model-repository"),
        ("POST", "/v2/repository/models/{name}/unload", r.unload, "model-repository"),
        ("GET", shm + "/status", r.shm_status, "shared-memory"),
        ("GET", shm + "/region/{region}/status", r.shm_status, "shared-memory"),
        ("POST", shm + "/region/{region}/register", r.shm_register, "shared-memory"),
        ("POST", shm + "/region/{region}/unregister", r.shm_unregister, "shared-memory"),
        ("POST", shm + "/unregister", r.shm_unregister, "shared-memory"),
        ("*", "/v2/cudasharedmemory/{tail:.*}", r.cuda_shm, "shared-memory"),
    ]
    for base in (model, model + "/versions/{version}"):
        routes += [
            ("GET", base, r.model_metadata, "metadata"),
            ("GET", base + "/ready", r.model_ready, "health"),
            ("GET", base + "/config", r.model_config, "model-config"),
            ("POST", base + "/infer", r.infer, "inference"),
            ("GET", base + "/stats", r.statistics, "statistics"),
        ]
    errors = errors or ErrorLog()
    app.add_routes(
        web.route(method, path, _guarded(handler, category, restricted, errors))
        for method, path, handler, category in routes
    )
    return app


async def start_http(
    dataplane: DataPlane,
    host: str,
    port: int,
    restricted: RestrictionTable | None = None,
    errors: ErrorLog | None = None,
) -> tuple[web.AppRunner, int]:
    """Listen on host:port (0: any free port) on the running loop; the runner and the port."""
    app = build_app(dataplane, restricted, errors)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=False)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
