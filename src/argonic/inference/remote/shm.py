"""System shared memory for patch requests to a server on this host (``shared_memory = "auto"``).

``window`` slots, each an input region (``batch_size`` fp32 patches) and an output region
(their scores), are created in /dev/shm once and registered with each local server that
advertises the ``system_shared_memory`` extension. A request then carries only the tensor
descriptions and region names: the patches are written into the slot, the scores read
back from it. Remote servers, plane mode, fp16 and compressed transports go over the wire
as before; a server that refuses the registration is used over the wire (one warning).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from multiprocessing import shared_memory

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from argonic.inference.remote.channel import Server
from argonic.inference.remote.errors import RemoteInferenceError
from argonic.inference.remote.identity import ModelSignature
from argonic.inference.remote.options import CallOptions
from argonic.settings import RemoteSettings

log = logging.getLogger(__name__)
EXTENSION = "system_shared_memory"


def is_local(address: str) -> bool:
    """Whether host:port names this machine (loopback or one of its own addresses)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        own = set(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        return False
    return any(ipaddress.ip_address(a.split("%")[0]).is_loopback or a in own for a in addresses)


@dataclass
class Slot:
    """One request's input and output regions."""

    name: str
    patches: shared_memory.SharedMemory
    scores: shared_memory.SharedMemory


class SharedMemoryPatches:
    """The slots and the servers they are registered with."""

    def __init__(
        self,
        remote: RemoteSettings,
        signature: ModelSignature,
        options: CallOptions,
        batch_size: int,
        window: int,
    ) -> None:
        self.remote, self.signature, self.options = remote, signature, options
        self.rows = batch_size
        spec = signature.inputs[0]
        self.patch_bytes = 4 * int(np.prod(spec.dims))
        self.widths = [int(np.prod(o.dims)) for o in signature.outputs]
        prefix = f"argonic_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._window = window
        self._prefix = prefix
        self._slots: list[Slot] = []
        self._free: list[Slot] = []
        self._servers: dict[str, bool] = {}  # address -> regions registered (False: not usable)
        self._registered: dict[str, Server] = {}

    def usable(self, server: Server) -> bool:
        """True once the slots are registered with ``server`` (checked once per channel)."""
        key = f"{server.address}#{server.checks}"
        if key not in self._servers:
            self._servers[key] = is_local(server.address) and self._register(server)
        return self._servers[key]

    def refused(self, server: Server, error: grpc.RpcError) -> bool:
        """Whether ``error`` says the server does not know the regions (a load balancer
        in front of several replicas, a restart): then shared memory is off for it."""
        details = error.details() if hasattr(error, "details") else ""
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT or "shared memory" not in details:
            return False
        self._servers[f"{server.address}#{server.checks}"] = False
        log.warning(
            "server %s does not know this client's shared memory regions (%s): sending "
            "tensors over the wire",
            server.label,
            details,
        )
        return True

    def acquire(self) -> Slot:
        """A free slot (there are as many as requests in flight)."""
        if not self._slots:
            self._create()
        return self._free.pop()

    def release(self, slot: Slot) -> None:
        """The slot's request is answered (or failed)."""
        self._free.append(slot)

    def request(self, slot: Slot, rows: np.ndarray) -> bytes:
        """The ModelInferRequest naming the slot; writes ``rows`` into its input region."""
        n = len(rows)
        data = np.ascontiguousarray(rows, "<f4").reshape(-1).view(np.uint8)
        slot.patches.buf[: data.nbytes] = data
        spec = self.signature.inputs[0]
        msg = service_pb2.ModelInferRequest(
            model_name=self.remote.model_name, model_version=self.remote.model_version
        )
        tensor = msg.inputs.add(name=spec.name, datatype="FP32", shape=[n, *spec.dims])
        _place(tensor.parameters, f"{slot.name}_in", data.nbytes, 0)
        offset = 0
        for spec_out, width in zip(self.signature.outputs, self.widths, strict=True):
            out = msg.outputs.add(name=spec_out.name)
            _place(out.parameters, f"{slot.name}_out", n * width * 4, offset)
            offset += self.rows * width * 4
        return msg.SerializeToString()

    def scores(self, slot: Slot, raw: bytes, out: np.ndarray) -> None:
        """Read the scores the server wrote into the slot into ``out`` [n, 4]."""
        served = {o.name for o in service_pb2.ModelInferResponse.FromString(raw).outputs}
        column = offset = 0
        n = len(out)
        for spec, width in zip(self.signature.outputs, self.widths, strict=True):
            if spec.name not in served:
                raise RemoteInferenceError(f"reply has no output '{spec.name}'")
            values = np.frombuffer(slot.scores.buf, "<f4", n * width, offset)
            out[:, column : column + width] = values.reshape(n, width)
            column += width
            offset += self.rows * width * 4

    def close(self) -> None:
        """Unregister the regions from the servers, then remove them from /dev/shm."""
        for server in self._registered.values():
            try:
                for name in self._names():
                    self._unregister(server, name)
            except grpc.RpcError:
                pass  # the server is gone: its mappings went with it
        self._registered.clear()
        for slot in self._slots:
            for region in (slot.patches, slot.scores):
                region.close()
                region.unlink()
        self._slots, self._free = [], []

    def _create(self) -> None:
        for i in range(self._window):
            name = f"{self._prefix}_{i}"
            patches = shared_memory.SharedMemory(f"{name}_in", True, self.rows * self.patch_bytes)
            scores = shared_memory.SharedMemory(
                f"{name}_out", True, self.rows * 4 * sum(self.widths)
            )
            self._slots.append(Slot(name, patches, scores))
        self._free = list(self._slots)

    def _register(self, server: Server) -> bool:
        try:
            meta = server.rpc("ServerMetadata")(
                service_pb2.ServerMetadataRequest(), **self.options.check()
            )
            if EXTENSION not in meta.extensions:
                return False
            if not self._slots:
                self._create()
            register = server.rpc("SystemSharedMemoryRegister")
            for slot in self._slots:
                for region, suffix in ((slot.patches, "_in"), (slot.scores, "_out")):
                    self._unregister(server, slot.name + suffix)
                    register(
                        service_pb2.SystemSharedMemoryRegisterRequest(
                            name=slot.name + suffix,
                            key=region.name,
                            offset=0,
                            byte_size=region.size,
                        ),
                        **self.options.check(),
                    )
        except grpc.RpcError as exc:
            log.warning(
                "server %s: shared memory not usable (%s): sending tensors over the wire",
                server.label,
                exc.details() if hasattr(exc, "details") else exc,
            )
            return False
        self._registered[server.address] = server
        log.info("server %s is on this host: patches travel in shared memory", server.label)
        return True

    def _names(self) -> list[str]:
        return [slot.name + suffix for slot in self._slots for suffix in ("_in", "_out")]

    def _unregister(self, server: Server, name: str) -> None:
        server.rpc("SystemSharedMemoryUnregister")(
            service_pb2.SystemSharedMemoryUnregisterRequest(name=name), **self.options.check()
        )


def _place(parameters, region: str, byte_size: int, offset: int) -> None:
    parameters["shared_memory_region"].string_param = region
    parameters["shared_memory_byte_size"].int64_param = byte_size
    parameters["shared_memory_offset"].int64_param = offset
