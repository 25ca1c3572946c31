"""Reduced-precision twins of the network in a model repository: int8 and bf16.

int8 (``<network>_int8``, ONNX Runtime): the Dense layer after the convolution (84% of
the FLOPs) becomes an int8 matrix product, ONNX's MatMulInteger: uint8 activations at one
static scale (the 99.99th percentile of the positive activations on simulated patches),
7-bit weights per output channel (symmetric, |w| <= 63: see ``WEIGHT_MAX``), the int32 sum
rescaled to fp32 before the bias and the ReLU. The convolution, the two small Dense layers
and the heads stay fp32: quantising the convolution's 8-bit-resolution input or the softmax
output changes ~1% of the classes. Before quantising, the convolution's filters are
equalised (cross-layer equalisation, Nagel et al. 2019): filter f is divided by its
activation range r_f and the Dense weights that read it multiplied by r_f, which leaves the
fp32 function unchanged (ReLU commutes with positive scales) and gives every filter the
whole uint8 range.

Near ties are re-run at 16 bits: a hit whose int8 scores put its two best classes, or its
Michel score and the Michel cut, less than ``REFINE_MARGIN`` apart in logits (~3% of hits)
goes through the Dense layer again inside the same graph, its activations as two uint8
parts at a scale of its own (x = s (hi + lo / 255) - s / 2, no clipping), both through the
7-bit weights and through their 7-bit rounding residuals (w = s_w (q + q_fine / 126), so
~14-bit weights), in two MatMulIntegers; its scores replace the int8 ones. Which hits are
re-run depends on each hit alone, so a hit's scores do not depend on its batch. Held out
(benchmarks/bench_int8_kernels.py, 235,730 hits): 99.979% of hits keep their fp32 class
(8-bit weights with the re-run at 8-bit weights, as shipped until 2026-12-07: 99.945%).

Why the graph is written here and not by ONNX Runtime's quantiser: its static modes (QDQ,
QOperator) requantise the Dense layer's output to uint8 too, which alone flipped 0.28% of
the held-out classes (99.72% kept; 99.91% with the fp32 output here, at the same speed;
network of 2026-12-01), and its dynamic mode takes the activation scale from each batch, so
a hit's scores would depend on the other hits it is batched with. Calibration is one pass
of the network over the patches and a percentile (ONNX Runtime's percentile calibrator held
8 GB for 4,096 patches).

bf16 (``<network>_bf16``, PyTorch backend): no file of its own; its config names the fp32
network (``parameters network``) and ``precision: bf16``, and the server reads the fp32
model.onnx into torch (argonic.server.backends.onnx_torch) and casts it.

Each gets a plane-mode twin (``<name>_plane``, the built-in plane backend). Needs
onnxruntime and onnx only (no torch).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from argonic.repository import (
    MODEL_NAME,
    read_config,
    sha256_hex,
    write_config,
    write_model_file,
)

CALIBRATION_BATCH = 256
# the activation scale: this percentile of the positive (post-ReLU) activations maps to 255.
# Held-out hits keeping their fp32 class, without the 16-bit re-run, with the network of
# 2026-12-01: 99.914% (MinMax: 99.65%, 99.9th: 99.83%, 99.999th: 99.80%); with the network
# shipped since 2026-12-05: 99.76% (99.945% with the re-run)
CALIBRATION_PERCENTILE = 99.99
# hits whose int8 logits are this close to a class tie or to the Michel cut are re-run at
# 16 bits (validation hits keeping their class: 99.950% at 0.3, 99.952% at 0.5, 2.8% and
# 4.5% of hits re-run; the int8 error of a class margin is above 0.5 for 1% of hits)
REFINE_MARGIN = 0.3
# the int8 weights' largest magnitude: 7 bits (63), not 8 (127). ONNX Runtime's uint8 x int8
# kernels on x86-64 CPUs without VNNI (AVX2, AVX-512 without VNNI) add products in pairs
# into int16 with saturation (vpmaddubsw): 2 x 255 x 127 = 64,770 overflows 32,767 and the
# product silently goes wrong, while 2 x 255 x 63 = 32,130 cannot. With 63 the same file is
# exact on every kernel (VNNI and AMX add in int32 anyway) at the speed of 8-bit weights;
# U8U8 (uint8 weights) is exact too but ran at 0.56x the roofline instead of ~1.0x on a VNNI
# Xeon (benchmarks/bench_int8_kernels.py; the options compared in BENCHMARKS.md).
WEIGHT_MAX = 63
# the 16-bit re-run also multiplies by each weight's rounding residual, in steps of 1/126 of
# the weight's scale (7 bits again), so its weights carry ~14 bits
FINE_STEPS = 126


def _graph_pattern(model: Any) -> tuple[Any, Any]:
    """(Conv node, Gemm node) of Conv -> Relu -> Flatten -> Gemm(transB=1); ValueError otherwise."""
    nodes = {n.output[0]: n for n in model.graph.node}
    for gemm in model.graph.node:
        if gemm.op_type != "Gemm":
            continue
        flatten = nodes.get(gemm.input[0])
        relu = nodes.get(flatten.input[0]) if flatten is not None else None
        conv = nodes.get(relu.input[0]) if relu is not None else None
        if None not in (flatten, relu, conv) and (
            flatten.op_type,
            relu.op_type,
            conv.op_type,
        ) == ("Flatten", "Relu", "Conv"):
            attributes = {a.name: a for a in gemm.attribute}
            ints = {k: attributes[k].i for k in ("transA", "transB") if k in attributes}
            floats = {k: attributes[k].f for k in ("alpha", "beta") if k in attributes}
            trans_b = ints.get("transB", 0)
            plain = ints.get("transA", 0) == 0 and all(v == 1.0 for v in floats.values())
            if trans_b != 1 or not plain or len(conv.input) < 3 or len(gemm.input) < 3:
                break
            return conv, gemm
    raise ValueError(
        "the network is not Conv -> Relu -> Flatten -> Gemm(transB=1): cannot equalise"
    )


def _run_batches(session: Any, output: str, patches: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate(
        [
            session.run([output], {name: patches[i : i + CALIBRATION_BATCH]})[0]
            for i in range(0, len(patches), CALIBRATION_BATCH)
        ]
    )


def _equalised(model: Any, patches: np.ndarray) -> tuple[Any, np.ndarray]:
    """(equalised copy of ``model``, its flattened ReLU activations on ``patches``)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    conv, gemm = _graph_pattern(model)
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    probe.graph.output.append(
        onnx.helper.make_tensor_value_info(gemm.input[0], onnx.TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    init = {t.name: t for t in model.graph.initializer}
    filters = numpy_helper.to_array(init[conv.input[1]]).shape[0]
    act = _run_batches(session, gemm.input[0], patches)  # [N, filters * H * W], NCHW flatten
    act = act.reshape(len(act), filters, -1)
    ranges = act.max(axis=(0, 2)).astype(np.float64)
    ranges = np.where(ranges > 0, ranges, 1.0)  # dead filters: leave alone

    def update(name: str, array: np.ndarray) -> None:
        init[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))

    w = numpy_helper.to_array(init[conv.input[1]])
    b = numpy_helper.to_array(init[conv.input[2]])
    d = numpy_helper.to_array(init[gemm.input[1]])  # [out, filters * H * W]
    update(conv.input[1], w / ranges[:, None, None, None])
    update(conv.input[2], b / ranges)
    update(
        gemm.input[1], (d.reshape(d.shape[0], filters, -1) * ranges[None, :, None]).reshape(d.shape)
    )
    act /= ranges[None, :, None].astype(np.float32)
    return model, act.reshape(len(act), -1)


def equalise(model: Any, patches: np.ndarray) -> Any:
    """The same function with every convolution filter's ReLU output scaled to range 1 on
    ``patches`` (the Dense weights compensate); returns a new ModelProto."""
    return _equalised(model, patches)[0]


def quantise_dense(
    model: Any,
    activations: np.ndarray,
    refine: float | None = REFINE_MARGIN,
    weight_max: int = WEIGHT_MAX,
) -> Any:
    """``model`` with its Dense layer after the convolution as an int8 MatMulInteger, the
    activation scale from ``activations`` (that layer's inputs), weights in
    [-weight_max, weight_max] per output channel, and near ties re-run at 16 bits
    (``refine``: the margin in logits; None: no re-run); returns a new ModelProto."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    conv, gemm = _graph_pattern(model)
    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    weight = numpy_helper.to_array(init[gemm.input[1]]).astype(np.float64)  # [out, in]
    positive = activations[activations > 0]
    top = float(np.percentile(positive, CALIBRATION_PERCENTILE)) if positive.size else 1.0
    a_scale = np.float32(top / 255)
    if not 1 <= weight_max <= 127:
        raise ValueError(f"weight_max must be in 1..127, not {weight_max}")
    w_scale = np.abs(weight).max(axis=1) / weight_max
    w_scale = np.where(w_scale > 0, w_scale, 1.0)
    w_int8 = np.clip(np.rint(weight / w_scale[:, None]), -weight_max, weight_max).astype(np.int8)
    name = gemm.name or "dense"
    x, y, bias = gemm.input[0], gemm.output[0], gemm.input[2]
    new_init = {
        f"{name}_act_scale": np.array(a_scale, np.float32),
        f"{name}_act_zero_point": np.array(0, np.uint8),
        f"{name}_weight_int8": np.ascontiguousarray(w_int8.T),  # [in, out] for MatMulInteger
        f"{name}_out_scale": (a_scale * w_scale).astype(np.float32),
    }
    nodes = [
        helper.make_node(
            "QuantizeLinear",
            [x, f"{name}_act_scale", f"{name}_act_zero_point"],
            [f"{name}_act_uint8"],
            name=f"{name}_quantize",
        ),
        helper.make_node(
            "MatMulInteger",
            [f"{name}_act_uint8", f"{name}_weight_int8"],
            [f"{name}_int32"],
            name=f"{name}_matmul_integer",
        ),
        helper.make_node(
            "Cast", [f"{name}_int32"], [f"{name}_sum"], to=TensorProto.FLOAT, name=f"{name}_cast"
        ),
        helper.make_node(
            "Mul", [f"{name}_sum", f"{name}_out_scale"], [f"{name}_scaled"], name=f"{name}_rescale"
        ),
        helper.make_node("Add", [f"{name}_scaled", bias], [y], name=f"{name}_bias"),
    ]
    old = list(graph.node)
    at = old.index(gemm)
    del graph.node[:]
    graph.node.extend(old[:at] + nodes + old[at + 1 :])
    kept_init = [t for t in graph.initializer if t.name != gemm.input[1]]
    del graph.initializer[:]
    graph.initializer.extend(kept_init)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in new_init.items())
    if refine is not None:
        fine = np.rint((weight / w_scale[:, None] - w_int8) * FINE_STEPS)
        w_fine = np.clip(fine, -weight_max, weight_max).astype(np.int8)
        _refine_near_ties(model, conv, name, w_int8, w_fine, w_scale, bias, y, refine)
    if not any(o.domain in ("", "ai.onnx") and o.version >= 10 for o in model.opset_import):
        raise ValueError("MatMulInteger needs ONNX opset >= 10")
    onnx.checker.check_model(model)
    return model


def _refine_near_ties(
    model: Any,
    conv: Any,
    name: str,
    w_int8: np.ndarray,
    w_fine: np.ndarray,
    w_scale: np.ndarray,
    bias: str,
    dense_out: str,
    margin: float,
) -> None:
    """Add the 16-bit re-run of near ties (module doc) to ``model`` in place: ``conv`` and
    the int8 layer ``name`` (weights ``w_int8`` [out, in] and their rounding residuals
    ``w_fine`` in steps of 1 / FINE_STEPS, scales, fp32 ``bias``, output ``dense_out``)
    are those quantise_dense wrote."""
    from onnx import TensorProto, helper, numpy_helper

    from argonic.detector.event import MICHEL_CUT

    graph = model.graph
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset > 17:  # ReduceMax takes its axes as an attribute up to opset 17
        raise ValueError(f"the 16-bit re-run is written for ONNX opset <= 17, not {opset}")
    nodes = list(graph.node)
    finals = [n for n in nodes if n.op_type in ("Softmax", "Sigmoid")]
    if sorted(n.op_type for n in finals) != ["Sigmoid", "Softmax"]:
        raise ValueError("the network's heads are not one Softmax and one Sigmoid")
    softmax = next(n for n in finals if n.op_type == "Softmax")
    sigmoid = next(n for n in finals if n.op_type == "Sigmoid")
    logits, michel = softmax.input[0], sigmoid.input[0]
    r = f"{name}_refine_"
    # the layers after the Dense one, again for the re-run rows (tensors prefixed)
    head, produced = [], {dense_out}
    for node in nodes[nodes.index(next(n for n in nodes if dense_out in n.output)) + 1 :]:
        if node in finals or not produced & set(node.input):
            continue
        copy = type(node)()
        copy.CopyFrom(node)
        copy.name = r + node.name
        copy.input[:] = [r + i if i in produced else i for i in node.input]
        copy.output[:] = [r + o for o in node.output]
        produced |= set(node.output)
        head.append(copy)
    if not {logits, michel} <= produced:
        raise ValueError("the heads do not follow the Dense layer")
    constants = {
        "k": np.array([2], np.int64),
        "first": np.array([0], np.int64),
        "second": np.array([1], np.int64),
        "axis1": np.array([1], np.int64),
        "axis0": np.array([0], np.int64),
        "margin": np.array(margin, np.float32),
        "michel_cut": np.array(math.log(MICHEL_CUT / (1 - MICHEL_CUT)), np.float32),
        "tiny": np.array(1e-30, np.float32),
        "255": np.array(255.0, np.float32),
        "half": np.array(0.5, np.float32),
        "zero_point": np.array([0], np.uint8),
        "half_column_sums": (
            0.5
            * (
                w_int8.astype(np.int64).sum(axis=1)
                + w_fine.astype(np.int64).sum(axis=1) / FINE_STEPS
            )
        ).astype(np.float32),
        "fine_steps": np.array(FINE_STEPS, np.float32),
        "weight_fine": np.ascontiguousarray(w_fine.T),  # [in, out], as the int8 weights
        "weight_scale": w_scale.astype(np.float32),
    }
    graph.initializer.extend(numpy_helper.from_array(v, r + k) for k, v in constants.items())

    def node(op: str, inputs: list[str], output: str, **attributes: Any) -> Any:
        return helper.make_node(op, [r + i for i in inputs], [r + output], **attributes)

    conv_attributes = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    new = [
        # which rows: the two best classes or the Michel score and its cut within the margin
        helper.make_node("TopK", [logits, r + "k"], [r + "top", r + "top_index"], axis=1),
        node("Slice", ["top", "first", "second", "axis1"], "top1"),
        node("Slice", ["top", "second", "k", "axis1"], "top2"),
        node("Sub", ["top1", "top2"], "class_margin"),
        node("Less", ["class_margin", "margin"], "class_tie"),
        helper.make_node("Sub", [michel, r + "michel_cut"], [r + "to_cut"]),
        node("Abs", ["to_cut"], "michel_margin"),
        node("Less", ["michel_margin", "margin"], "michel_tie"),
        node("Or", ["class_tie", "michel_tie"], "tie"),
        node("Squeeze", ["tie", "axis1"], "tie_rows"),
        node("NonZero", ["tie_rows"], "rows_1k"),
        node("Squeeze", ["rows_1k", "axis0"], "rows"),
        node("Transpose", ["rows_1k"], "rows_k1", perm=[1, 0]),
        # their activations again, from their inputs (the batch's stay free to be reused)
        helper.make_node("Gather", [conv.input[0], r + "rows"], [r + "x"], axis=0),
        helper.make_node(
            "Conv", [r + "x", conv.input[1], conv.input[2]], [r + "conv"], **conv_attributes
        ),
        node("Relu", ["conv"], "relu"),
        node("Flatten", ["relu"], "act"),
        # x = s hi + (s / 255) lo - s / 2, s = row max / 255: 16 bits, nothing clipped
        node("ReduceMax", ["act"], "row_max", axes=[1], keepdims=0),
        node("Max", ["row_max", "tiny"], "row_top"),
        node("Div", ["row_top", "255"], "scale"),
        node("Shape", ["scale"], "n_rows"),
        node("Expand", ["zero_point", "n_rows"], "zero_points"),
        node("QuantizeLinear", ["act", "scale", "zero_points"], "hi", axis=0),
        node("DequantizeLinear", ["hi", "scale", "zero_points"], "hi_value", axis=0),
        node("Sub", ["act", "hi_value"], "residual"),
        node("Unsqueeze", ["scale", "axis1"], "row_scale"),
        node("Mul", ["row_scale", "half"], "half_step"),
        node("Add", ["residual", "half_step"], "shifted"),
        node("Div", ["scale", "255"], "fine_scale"),
        node("QuantizeLinear", ["shifted", "fine_scale", "zero_points"], "lo", axis=0),
        node("Concat", ["hi", "lo"], "both", axis=0),
        # both activation parts times the weights and times their residuals: ~14-bit weights
        helper.make_node("MatMulInteger", [r + "both", f"{name}_weight_int8"], [r + "int32"]),
        node("MatMulInteger", ["both", "weight_fine"], "fine_int32"),
        node("Cast", ["int32"], "coarse_sums", to=TensorProto.FLOAT),
        node("Cast", ["fine_int32"], "fine_sums", to=TensorProto.FLOAT),
        node("Div", ["fine_sums", "fine_steps"], "fine_part"),
        node("Add", ["coarse_sums", "fine_part"], "sums"),
        helper.make_node("Split", [r + "sums"], [r + "hi_sum", r + "lo_sum"], axis=0),
        node("Div", ["lo_sum", "255"], "lo_part"),
        node("Add", ["hi_sum", "lo_part"], "sum"),
        node("Sub", ["sum", "half_column_sums"], "centred"),
        node("Mul", ["centred", "row_scale"], "scaled"),
        node("Mul", ["scaled", "weight_scale"], "weighted"),
        helper.make_node("Add", [r + "weighted", bias], [r + dense_out]),
        *head,
        helper.make_node("ScatterND", [logits, r + "rows_k1", r + logits], [r + "logits"]),
        helper.make_node("ScatterND", [michel, r + "rows_k1", r + michel], [r + "michel"]),
    ]
    softmax.input[0], sigmoid.input[0] = r + "logits", r + "michel"
    rest = [n for n in nodes if n not in finals]
    del graph.node[:]
    graph.node.extend(rest + new + [softmax, sigmoid])


def quantise_int8(model_file: Path, patches: np.ndarray, out_file: Path) -> str:
    """Write the int8 network (see the module doc) of ``model_file`` calibrated on
    ``patches`` [N, 48, 48, 1] to ``out_file`` with its checksum; returns the digest."""
    import onnx

    model, activations = _equalised(onnx.load(str(model_file)), patches)
    return write_model_file(out_file, quantise_dense(model, activations).SerializeToString())


def _twin_config(config: Any, name: str, **parameters: str) -> Any:
    twin = type(config)()
    twin.CopyFrom(config)
    twin.name = name
    for key, value in parameters.items():
        twin.parameters[key].string_value = value
    return twin


def write_precision_twins(
    repository: str | os.PathLike[str],
    patches: np.ndarray,
    network: str = MODEL_NAME,
    plane: str = f"{MODEL_NAME}_plane",
    version: int = 1,
) -> dict[str, Any]:
    """Write ``<network>_int8``, ``<network>_bf16`` and their plane twins into ``repository``
    (next to ``network`` and its plane model ``plane``); returns what was written."""
    root = Path(repository)
    base = read_config(root / network)
    source = root / network / str(version) / "model.onnx"
    int8, bf16 = f"{network}_int8", f"{network}_bf16"
    digest = quantise_int8(source, patches, root / int8 / str(version) / "model.onnx")
    int8_config = _twin_config(
        base,
        int8,
        precision="int8",
        quantised_from=sha256_hex(source),
        execution_batch_size="256",  # fastest served on a 2-core Zen 3 (no load-time probe)
    )
    write_config(root / int8, int8_config)
    bf16_config = _twin_config(base, bf16, precision="bf16", network=network)
    bf16_config.platform = "pytorch_libtorch"
    bf16_config.parameters["execution_batch_size"].string_value = "256"
    write_config(root / bf16, bf16_config)
    written = {"int8": {"model": int8, "sha256": digest, "calibration_patches": len(patches)}}
    written["bf16"] = {"model": bf16, "network": network}
    if (root / plane / "config.pbtxt").is_file():
        plane_config = read_config(root / plane)
        for twin, name in ((int8, f"{int8}_plane"), (bf16, f"{bf16}_plane")):
            config = _twin_config(plane_config, name, network=twin)
            config.backend = "argonic_plane"  # argonic serve's built-in plane backend
            write_config(root / name, config)
            written[name] = {"network": twin}
    return written
