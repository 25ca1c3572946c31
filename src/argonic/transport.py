"""Lossless compression of tensor bytes in ModelInfer requests (client and server).

A request that carries ``parameters["argonic_compression"] = "zstd"`` (or ``"lz4"``) has
each ``raw_input_contents`` entry compressed on its own (a zstd frame / an LZ4 frame);
the tensors' ``datatype`` and ``shape`` describe the uncompressed data. argonic serve
advertises what it decodes in ModelConfig ``parameters["argonic_transport"]`` (e.g.
``"fp16,zstd,lz4"``: FP16 accepted for FP32 inputs, and the compressions); a server that
does not (NVIDIA Triton) gets plain FP32 tensors. Replies are never compressed here (the
scores are 16 bytes per hit); gRPC's own gzip still applies to both directions.

zstd (level 1) is the default choice: on simulated ProtoDUNE-SP patches it shrinks float32
patches ~140x at ~5 GB/s, lz4 ~26x (benchmarks/BENCHMARKS.md, "Bytes per event").
"""

from __future__ import annotations

from collections.abc import Callable

PARAMETER = "argonic_compression"
TRANSPORT_PARAMETER = "argonic_transport"
ZSTD_LEVEL = 1


class CompressionError(ValueError):
    """Unknown compression, a missing module, or bytes that do not decompress."""


def _zstd_compress() -> Callable[[bytes], bytes]:
    import zstandard

    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)  # write_content_size: the default
    return compressor.compress


def _zstd_decompress() -> Callable[[bytes, int], bytes]:
    import zstandard

    def decompress(data: bytes, size: int) -> bytes:
        # read at most one byte past the declared size: decompress() would trust the content
        # size written in the frame's header, and a small frame can claim gigabytes
        with zstandard.ZstdDecompressor().stream_reader(data) as reader:
            return reader.read(size + 1)

    return decompress


def _lz4_compress() -> Callable[[bytes], bytes]:
    import lz4.frame

    return lambda data: lz4.frame.compress(data, store_size=True)


def _lz4_decompress() -> Callable[[bytes, int], bytes]:
    import lz4.frame

    def decompress(data: bytes, size: int) -> bytes:
        # at most one byte past the declared size: a frame that expands further (a bomb,
        # or a lying content size) is found without inflating it
        return lz4.frame.LZ4FrameDecompressor().decompress(data, max_length=size + 1)

    return decompress


_CODECS = {"zstd": (_zstd_compress, _zstd_decompress), "lz4": (_lz4_compress, _lz4_decompress)}
COMPRESSIONS = ("none", *_CODECS)


def available() -> list[str]:
    """Compressions whose Python module is installed."""
    names = []
    for name, (make, _) in _CODECS.items():
        try:
            make()
        except ImportError:
            continue
        names.append(name)
    return names


def compressor(name: str) -> Callable[[bytes], bytes] | None:
    """A ``bytes -> bytes`` compressor for ``name`` (None for "none")."""
    if name == "none":
        return None
    if name not in _CODECS:
        raise CompressionError(
            f"unknown tensor compression {name!r} (known: {', '.join(COMPRESSIONS)})"
        )
    try:
        return _CODECS[name][0]()
    except ImportError as exc:
        raise CompressionError(
            f"tensor compression {name!r} needs the Python package "
            f"{'zstandard' if name == 'zstd' else 'lz4'}: {exc}"
        ) from None


def decompress(name: str, data: bytes | memoryview, size: int) -> bytes:
    """Decompress one tensor of ``size`` bytes; CompressionError if it does not decode to that."""
    if name not in _CODECS:
        raise CompressionError(
            f"unknown {PARAMETER} {name!r} (this server decodes: {', '.join(available())})"
        )
    try:
        out = _CODECS[name][1]()(bytes(data), size)
    except ImportError:
        raise CompressionError(
            f"this server cannot decode {PARAMETER} {name!r} "
            f"(it decodes: {', '.join(available()) or 'none'})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - corrupt data of any kind is the client's error
        raise CompressionError(
            f"{name} data does not decompress: {type(exc).__name__}: {exc}"
        ) from None
    if len(out) != size:
        raise CompressionError(f"{name} data decompresses to {len(out)} bytes, expected {size}")
    return out
