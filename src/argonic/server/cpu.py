"""What the host CPU can multiply fast, and which reduced precisions it can serve.

The features are the host's own flags as archspec reads them (/proc/cpuinfo on Linux, sysctl
on macOS), not those of the named microarchitecture it matches. A precision is *native*
where the CPU has instructions for its matrix products: int8 with VNNI (AVX-512 VNNI,
AVX-VNNI or AMX-INT8) or, slower, AVX2's 8-bit multiply-adds; bf16 with AVX-512 BF16 or AMX-BF16
(Arm: the bf16 extension); fp16 with AVX-512 FP16 or AMX-FP16 (Arm: asimdhp). Without them
PyTorch falls back to reference kernels (bf16 here: 0.3 GFLOP/s against 108 in fp32), so
such a model is refused at load unless its config says ``parameters allow_emulated: "true"``.
"""

from __future__ import annotations

import functools

from argonic.server.errors import HostUnsupported

# precision -> (feature sets, any of which makes it native; its description)
_NATIVE: dict[str, tuple[tuple[str, ...], str]] = {
    "bf16": (("avx512_bf16", "amx_bf16", "bf16"), "AVX-512 BF16 / AMX-BF16"),
    "fp16": (("avx512_fp16", "amx_fp16", "asimdhp"), "AVX-512 FP16 / AMX-FP16"),
}
_REPORTED = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avxvnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
)


@functools.cache
def features() -> frozenset[str]:
    """The host CPU's feature flags (lower case); empty if archspec cannot tell."""
    try:
        # the host's own flags: archspec.cpu.host() is the best-matching *named*
        # microarchitecture, whose features are the database's (a Sapphire Rapids VM whose
        # hypervisor hides waitpkg matches icelake, which has no AVX-512 BF16 and no AMX)
        from archspec.cpu.detect import detected_info

        return frozenset(f.lower() for f in detected_info().features)
    except Exception:  # noqa: BLE001 - an unknown CPU is reported as such, not fatal
        return frozenset()


@functools.cache
def describe() -> str:
    """One log line: the CPU's microarchitecture and its matrix-product features."""
    try:
        import archspec.cpu

        host = archspec.cpu.host()
        name = f"{host.vendor} {host.name}"
    except Exception:  # noqa: BLE001
        name = "unknown CPU"
    flags = features()
    have = [f for f in _REPORTED if f in flags]
    lacks = [f for f in _REPORTED if f not in flags]
    return f"{name}: has {', '.join(have) or 'none of'} ; lacks {', '.join(lacks) or 'none'}"


def native(precision: str) -> bool:
    """Whether this CPU multiplies ``precision`` (fp32, int8, bf16, fp16) natively."""
    if precision in ("fp32", "int8"):  # ONNX Runtime has int8 kernels for every x86-64 / Arm
        return True
    wanted, _ = _NATIVE[precision]
    return bool(features() & set(wanted))


def int8_kernels() -> str:
    """Which int8 kernels ONNX Runtime will use here, for the load log."""
    flags = features()
    if flags & {"avx512_vnni", "avxvnni", "avx_vnni", "amx_int8"}:
        return "VNNI"
    return "AVX2 u8s8 (no VNNI: about 1.3x fp32)" if "avx2" in flags else "generic"


def check_precision(model: str, precision: str, allow_emulated: bool) -> str:
    """A log note on how ``precision`` runs on this CPU; HostUnsupported where it has no
    native kernels and the config does not allow emulation."""
    if precision == "fp32":
        return "fp32"
    if precision == "int8":
        return f"int8 on {int8_kernels()}"
    if native(precision):
        return f"{precision} native ({_NATIVE[precision][1]})"
    if allow_emulated:
        return (
            f"{precision} EMULATED (no {_NATIVE[precision][1]} on this CPU: far slower than fp32)"
        )
    raise HostUnsupported(
        f"model '{model}': precision {precision} needs {_NATIVE[precision][1]}, which this "
        f"CPU lacks ({describe()}); it would run far slower than fp32. Serve the fp32 or "
        'int8 model, or set parameters allow_emulated: "true" to load it anyway'
    )
