"""What the host CPU can multiply fast, and which reduced precisions it can serve.

The features are the host's own flags as archspec reads them (/proc/cpuinfo on Linux, sysctl
on macOS), not those of the named microarchitecture it matches. A precision is *native*
where the CPU has instructions for its matrix products: int8 with VNNI (AVX-512 VNNI,
AVX-VNNI or AMX-INT8) or, slower, AVX2's 8-bit multiply-adds; bf16 with AVX-512 BF16 or AMX-BF16
(Arm: the bf16 extension); fp16 with AVX-512 FP16 or AMX-FP16 (Arm: asimdhp). Without them
PyTorch falls back to reference kernels (bf16 here: 0.3 GFLOP/s against 108 in fp32), so
such a model is refused at load unless its config says ``parameters allow_emulated: "true"``.

int8 is served on every CPU, but ONNX Runtime's uint8 x int8 kernel on x86-64 CPUs without
VNNI adds products in pairs into int16 with saturation (vpmaddubsw): weights above 64 in
magnitude can overflow there and give a wrong product, silently. Which kernel this CPU takes
is probed, not read from the flags (ONNX Runtime decides by the CPUID instruction; an
emulated CPU, or a hypervisor, can show /proc/cpuinfo flags that differ from it): one
MatMulInteger of 255 x 127 products must sum exactly. A model whose int8 weights could
overflow the saturating kernel is refused there (``check_int8_weights``), with no override.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from argonic.server.errors import HostUnsupported

# the largest |weight| a uint8 x int8 product can have where pairs are summed in int16:
# 2 x 255 x 64 = 32,640 <= 32,767
INT16_PAIR_SAFE_WEIGHT = 64
_VNNI = {"avx512_vnni", "avxvnni", "avx_vnni", "amx_int8"}

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


@functools.cache
def u8s8_saturates() -> bool:
    """Whether ONNX Runtime's uint8 x int8 matrix product here sums pairs of products in
    int16 with saturation (x86-64 without VNNI): probed with 255 x 127 products."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k = 64
    weights = numpy_helper.from_array(np.full((k, 16), 127, np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "u8s8_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, 16])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"a": np.full((8, k), 255, np.uint8)})[0]
    return not np.all(got == 255 * 127 * k)


def int8_kernels() -> str:
    """Which uint8 x int8 kernel ONNX Runtime uses here, for the load log and model config."""
    if u8s8_saturates():
        return "u8s8 with int16 pair sums (no VNNI: weights above 64 saturate)"
    if features() & _VNNI:
        return "VNNI (int32 sums)"
    return "int32 sums"


def integer_matmul_weights(model_file: str | os.PathLike[str]) -> list[np.ndarray]:
    """The int8 weight initializers that the MatMulInteger nodes of an ONNX file multiply."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_file), load_external_data=False)
    used = {n.input[1] for n in model.graph.node if n.op_type == "MatMulInteger"}
    return [
        numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.name in used and t.data_type == onnx.TensorProto.INT8
    ]


def check_int8_model(model: str, model_file: str | os.PathLike[str]) -> str | None:
    """A log note on the int8 kernel an ONNX model's MatMulInteger weights take here (None:
    it has none); HostUnsupported where that kernel would saturate on them (a wrong product
    is never run)."""
    weights = integer_matmul_weights(model_file)
    if not weights:
        return None
    kernel = int8_kernels()
    largest = max(int(np.abs(w.astype(np.int16)).max(initial=0)) for w in weights)
    if u8s8_saturates() and largest > INT16_PAIR_SAFE_WEIGHT:
        raise HostUnsupported(
            f"model '{model}': its int8 weights reach {largest}, and this CPU has no VNNI "
            "(AVX-512 VNNI, AVX-VNNI or AMX-INT8): ONNX Runtime's uint8 x int8 kernel here sums "
            f"pairs of products in int16, which saturate above {INT16_PAIR_SAFE_WEIGHT}, so its "
            "scores would be wrong. Rebuild it with `argonic quantize` (7-bit weights, exact on "
            "every CPU) or serve the fp32 model"
        )
    return f"int8 on {kernel}; weights within +-{largest}: exact here"


def check_precision(model: str, precision: str, allow_emulated: bool) -> str:
    """A log note on how ``precision`` runs on this CPU; HostUnsupported where it has no
    native kernels and the config does not allow emulation."""
    if precision == "fp32":
        return "fp32"
    if precision == "int8":  # the weights' check: check_int8_weights
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
