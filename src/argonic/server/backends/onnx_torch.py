"""An ONNX network as a PyTorch module, so the PyTorch backend can run a repository's
model.onnx in bf16 or fp16 (CPU or CUDA) without a second copy of its weights.

Written here because the converters on PyPI (onnx2torch) pull in torchvision for ops
this network never uses. It interprets the graph's nodes in order with torch functions
and supports the operators of feed-forward CNNs such as EmTrackMichelId: Constant,
Reshape, Flatten, Transpose, Conv, Gemm, MatMul, Add, Mul, Relu, Sigmoid, Softmax. Any
other operator is refused when the model loads, naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from argonic.server.errors import InvalidArgument


def onnx_module(model_file: Path) -> Any:
    """A ``torch.nn.Module`` computing the ONNX graph; ``forward(*inputs)`` returns a dict
    output name -> tensor. Float weights become parameters (``.to(dtype)`` casts them)."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(model_file))
    graph = model.graph
    unsupported = sorted({n.op_type for n in graph.node} - set(SUPPORTED))
    if unsupported:
        raise InvalidArgument(
            f"{model_file}: operators {unsupported} are not supported by the PyTorch "
            f"backend's ONNX reader (supported: {', '.join(SUPPORTED)})"
        )
    initializers = {t.name for t in graph.initializer}

    class OnnxModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.names: dict[str, str] = {}  # ONNX float tensor name -> attribute name
            self.static: dict[str, list] = {}  # integer constants (shapes), kept on the host
            for i, tensor in enumerate(graph.initializer):
                self._constant(f"w{i}", tensor.name, numpy_helper.to_array(tensor))
            for i, node in enumerate(graph.node):
                if node.op_type == "Constant":
                    value = onnx.helper.get_attribute_value(node.attribute[0])
                    self._constant(f"c{i}", node.output[0], numpy_helper.to_array(value))
            self.inputs = [i.name for i in graph.input if i.name not in initializers]
            self.outputs = [o.name for o in graph.output]
            self.nodes = [n for n in graph.node if n.op_type != "Constant"]
            self.attrs = [
                {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
                for n in self.nodes
            ]

        def _constant(self, attr: str, name: str, array: Any) -> None:
            tensor = torch.from_numpy(array.copy())
            if tensor.is_floating_point():
                self.register_parameter(attr, torch.nn.Parameter(tensor, requires_grad=False))
                self.names[name] = attr
            else:  # a Python list: no device round trip per call (CUDA graphs need none)
                self.static[name] = array.tolist()

        def forward(self, *args: Any) -> dict[str, Any]:
            values: dict[str, Any] = dict(self.static)
            values.update((name, getattr(self, attr)) for name, attr in self.names.items())
            values.update(zip(self.inputs, args, strict=True))
            for node, attrs in zip(self.nodes, self.attrs, strict=True):
                x = [values[name] if name else None for name in node.input]
                values[node.output[0]] = _apply(torch, node.op_type, x, attrs)
            return {name: values[name] for name in self.outputs}

    return OnnxModule().eval()


def _reshape(torch: Any, x: list[Any], attrs: dict[str, Any]) -> Any:
    shape = [
        int(s) if s != 0 or attrs.get("allowzero", 0) else x[0].shape[i] for i, s in enumerate(x[1])
    ]
    return x[0].reshape(shape)


def _flatten(torch: Any, x: list[Any], attrs: dict[str, Any]) -> Any:
    return x[0].flatten(attrs.get("axis", 1)) if attrs.get("axis", 1) else x[0].reshape(1, -1)


def _conv(torch: Any, x: list[Any], attrs: dict[str, Any]) -> Any:
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise InvalidArgument(f"Conv with asymmetric pads {pads} is not supported")
    return torch.nn.functional.conv2d(
        x[0],
        x[1],
        x[2] if len(x) > 2 else None,
        stride=attrs.get("strides", 1),
        padding=pads[:2],
        dilation=attrs.get("dilations", 1),
        groups=attrs.get("group", 1),
    )


def _gemm(torch: Any, x: list[Any], attrs: dict[str, Any]) -> Any:
    a = x[0].T if attrs.get("transA", 0) else x[0]
    b = x[1].T if attrs.get("transB", 0) else x[1]
    y = (a @ b) * attrs.get("alpha", 1.0)
    if len(x) > 2 and x[2] is not None:
        y = y + x[2] * attrs.get("beta", 1.0)
    return y


#: ONNX operator -> its torch equivalent on (torch, inputs, attributes)
_OPS: dict[str, Any] = {
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": lambda torch, x, attrs: x[0].permute(*attrs["perm"]),
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda torch, x, attrs: x[0] @ x[1],
    "Add": lambda torch, x, attrs: x[0] + x[1],
    "Mul": lambda torch, x, attrs: x[0] * x[1],
    "Relu": lambda torch, x, attrs: torch.relu(x[0]),
    "Sigmoid": lambda torch, x, attrs: torch.sigmoid(x[0]),
    "Softmax": lambda torch, x, attrs: torch.softmax(x[0], dim=attrs.get("axis", -1)),
}
SUPPORTED = ("Constant", *_OPS)  # Constant nodes are folded into the weights


def _apply(torch: Any, op: str, x: list[Any], attrs: dict[str, Any]) -> Any:
    """One node: the torch equivalent of ONNX operator ``op`` on inputs ``x``."""
    if op not in _OPS:  # pragma: no cover - the graph was checked against _OPS first
        raise InvalidArgument(f"ONNX operator {op} is not supported")
    return _OPS[op](torch, x, attrs)
