"""Triton's system shared memory extension: regions clients register, tensors read and written there.

A client creates a POSIX shared memory object (``/dev/shm/<key>``), registers a window of
it (offset, byte size) under a name, then names that region, an offset and a byte size in
an input's or output's parameters instead of sending the bytes. Every access is checked
against the registered window: a region too small or an offset past its end is
INVALID_ARGUMENT, never a read or write outside it. Inputs are copied out of the region on
arrival, so a client may reuse (or unregister) it as soon as the answer comes.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from grpc import StatusCode

from argonic.server.core.tensors import SharedMemoryRef
from argonic.server.errors import InvalidArgument, ServerError

SHM_DIR = Path("/dev/shm")
REGION, OFFSET, BYTE_SIZE = (
    "shared_memory_region",
    "shared_memory_offset",
    "shared_memory_byte_size",
)


@dataclass
class Region:
    """One registered window of a shared memory object, mapped into this process."""

    name: str
    key: str
    offset: int
    byte_size: int
    mapping: mmap.mmap

    def status(self) -> dict[str, int | str]:
        """Name, key, offset and byte size (Triton's status entry)."""
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }


def _path_of(key: str) -> Path:
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or name in (".", ".."):
        raise InvalidArgument(f"invalid shared memory key '{key}'")
    return SHM_DIR / name


class SystemSharedMemory:
    """The registered regions of one server (register, unregister, status, read, write)."""

    def __init__(self) -> None:
        self.regions: dict[str, Region] = {}

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map ``byte_size`` bytes of ``/dev/shm/<key>`` from ``offset`` as region ``name``."""
        if name in self.regions:
            raise ServerError(
                f"shared memory region '{name}' already in manager", StatusCode.ALREADY_EXISTS
            )
        if offset < 0 or byte_size <= 0:
            raise InvalidArgument(
                f"shared memory region '{name}': offset {offset} and byte size {byte_size} "
                "must be >= 0 and > 0"
            )
        path = _path_of(key)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise InvalidArgument(
                f"Unable to open shared memory region '{name}' (key '{key}'): {exc.strerror}"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if offset + byte_size > size:
                raise InvalidArgument(
                    f"shared memory region '{name}': offset {offset} + byte size {byte_size} "
                    f"is past the end of '{key}' ({size} bytes)"
                )
            mapping = mmap.mmap(fd, offset + byte_size)
        finally:
            os.close(fd)
        self.regions[name] = Region(name, key, offset, byte_size, mapping)

    def unregister(self, name: str = "") -> None:
        """Forget one region (unknown names are ignored, as Triton does), or all with ``""``."""
        for region_name in [name] if name else list(self.regions):
            region = self.regions.pop(region_name, None)
            if region is not None:
                region.mapping.close()

    def status(self, name: str = "") -> list[dict[str, int | str]]:
        """The status of one region (NotFound-like INVALID_ARGUMENT if unknown) or of all."""
        if name and name not in self.regions:
            raise ServerError(
                f"Unable to find system shared memory region: '{name}'", StatusCode.NOT_FOUND
            )
        return [r.status() for n, r in sorted(self.regions.items()) if not name or n == name]

    def _window(self, ref: SharedMemoryRef, what: str) -> tuple[Region, int]:
        region = self.regions.get(ref.region)
        if region is None:
            raise InvalidArgument(f"Unable to find shared memory region: '{ref.region}' ({what})")
        if ref.offset < 0 or ref.byte_size < 0 or ref.offset + ref.byte_size > region.byte_size:
            raise InvalidArgument(
                f"{what}: offset {ref.offset} + byte size {ref.byte_size} is outside shared "
                f"memory region '{ref.region}' ({region.byte_size} bytes)"
            )
        return region, region.offset + ref.offset

    def read(self, ref: SharedMemoryRef, what: str) -> bytes:
        """A copy of the bytes a tensor names (``what`` names the tensor in errors)."""
        region, start = self._window(ref, what)
        return region.mapping[start : start + ref.byte_size]

    def write(self, ref: SharedMemoryRef, data: np.ndarray, what: str) -> None:
        """Write an output tensor (little-endian) where ``ref`` says; it must fit."""
        region, start = self._window(ref, what)
        raw = np.ascontiguousarray(data, data.dtype.newbyteorder("<")).tobytes()
        if len(raw) > ref.byte_size:
            raise InvalidArgument(
                f"shared memory size specified with the request for {what} ({ref.byte_size} "
                f"bytes) should be at least {len(raw)} bytes to hold the results"
            )
        region.mapping[start : start + len(raw)] = raw

    def close(self) -> None:
        """Unregister every region."""
        self.unregister()


def reference(params: Mapping[str, object], what: str) -> SharedMemoryRef | None:
    """The SharedMemoryRef a tensor's parameters name (plain values), or None."""
    if REGION not in params:
        return None
    region, size, offset = params[REGION], params.get(BYTE_SIZE), params.get(OFFSET, 0)
    if not isinstance(region, str) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in (size, offset)
    ):
        raise InvalidArgument(
            f"{what}: '{REGION}' must be a string, '{BYTE_SIZE}' and '{OFFSET}' integers"
        )
    return SharedMemoryRef(region, size, offset)  # type: ignore[arg-type]
