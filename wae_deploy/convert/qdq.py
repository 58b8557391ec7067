"""Weights a Q/DQ model dequantizes on every call, found and removed.

NNCF quantizes a layer's weight and, separately, the activation it reads. Where no activation
quantizer lands (after a Flatten or a Concat, for instance) the layer is left "weight-only":

    int8 weight -> DequantizeLinear -> float Gemm <- float activation

ONNX Runtime cannot fuse that into QGemm/QLinearConv, so it turns the weight back into FP32 on
every call and runs the layer in FP32 (on the WAE-VGG16, the fusion head's first FC spent 22.5%
of the whole call in that DequantizeLinear). Two repairs, chosen per layer by measurement
(int8_policy.pick_repair, on timings from targets/onnxruntime.py):

    fold_weights(model, layers)         the DequantizeLinear computed once, at build time, into an
                                        FP32 constant: same numbers, FP32 speed, 4x the weight bytes
    quantize_activations(model, ranges) an activation Q/DQ pair in front of the layer, from ranges
                                        measured on the calibration images: the runtime fuses an
                                        INT8 layer (QGemm, QLinearConv, MatMulIntegerToFloat)

Pure ONNX and numpy: this runs wherever a Q/DQ model is built or checked.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

WEIGHTED = ("Conv", "Gemm", "MatMul", "ConvTranspose", "FusedConv", "FusedGemm", "FusedMatMul", "NchwcConv")
_DEQUANT = ("DequantizeLinear",)
# Ops ONNX Runtime's Q/DQ propagation carries a quantized tensor across (a Concat it does not).
TRANSPARENT = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")


def _producers(graph) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def _constants(graph) -> set[str]:
    names = {t.name for t in graph.initializer}
    names |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _quantized(tensor: str, made_by: dict) -> bool:
    """Whether `tensor` comes from a DequantizeLinear, through ops a runtime moves Q/DQ across."""
    node = made_by.get(tensor)
    while node is not None and node.op_type in TRANSPARENT:
        node = made_by.get(node.input[0])
    return node is not None and node.op_type in _DEQUANT


def weight_only_layers(model: onnx.ModelProto, any_activation: bool = False) -> dict[str, str]:
    """Weighted float layers that read a constant weight through a DequantizeLinear: {layer: that DequantizeLinear}.

    On NNCF's Q/DQ model: those whose activation is not quantized (the runtime will dequantize their
    weight on every call). With `any_activation`, for a runtime's optimised graph, where every such
    DequantizeLinear left is one that runs on every call.
    """
    graph = model.graph
    made_by, consts = _producers(graph), _constants(graph)
    out = {}
    for node in graph.node:
        if node.op_type not in WEIGHTED or len(node.input) < 2:
            continue
        dq = made_by.get(node.input[1])
        if dq is None or dq.op_type not in _DEQUANT or dq.input[0] not in consts:
            continue
        if any_activation or not _quantized(node.input[0], made_by):
            out[node.name] = dq.name
    return out


def _dequantized(dq: onnx.NodeProto, tensors: dict[str, np.ndarray]) -> np.ndarray:
    """What DequantizeLinear computes, in numpy: (q - zero_point) * scale, per-axis where the scale is a vector."""
    q = tensors[dq.input[0]].astype(np.float32)
    scale = tensors[dq.input[1]].astype(np.float32)
    zero = tensors[dq.input[2]].astype(np.float32) if len(dq.input) > 2 and dq.input[2] else np.float32(0)
    if scale.ndim == 1 and scale.size > 1:
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), np.broadcast_to(zero, scale.shape).reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def _tensors(graph) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _drop_unused(graph) -> None:
    """Remove nodes and initializers nothing reads any more (the folded DequantizeLinear and its inputs)."""
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        for n in dead:
            graph.node.remove(n)
        if not dead:
            break
    read = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(t)


def fold_weights(model: onnx.ModelProto, layers) -> onnx.ModelProto:
    """A copy of `model` where each named layer reads its weight as an FP32 constant (no DequantizeLinear)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    made_by, tensors = _producers(graph), _tensors(graph)
    for node in graph.node:
        if node.name not in layers:
            continue
        dq = made_by[node.input[1]]
        name = f"{node.input[1]}_folded"
        graph.initializer.append(numpy_helper.from_array(_dequantized(dq, tensors), name))
        node.input[1] = name
    _drop_unused(graph)
    return model


def activation_inputs(model: onnx.ModelProto, layers) -> dict[str, str]:
    """{layer: the float activation tensor it reads} for the named layers."""
    return {n.name: n.input[0] for n in model.graph.node if n.name in layers}


def quantization_params(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of an 8-bit quantizer covering [lo, hi]: uint8 from 0 for a non-negative
    tensor (after a ReLU), else symmetric int8, as NNCF's performance preset places them."""
    if lo >= 0:
        return np.array(max(hi, 1e-12) / 255.0, np.float32), np.array(0, np.uint8)
    return np.array(max(abs(lo), abs(hi), 1e-12) / 127.0, np.float32), np.array(0, np.int8)


def quantize_activations(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]]) -> onnx.ModelProto:
    """A copy of `model` with a QuantizeLinear/DequantizeLinear pair on each named layer's activation input.

    `ranges`: {layer name: (min, max) of its activation on the calibration images}.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    nodes = list(graph.node)
    for node in nodes:
        if node.name not in ranges:
            continue
        x = node.input[0]
        scale, zero = quantization_params(*ranges[node.name])
        base = f"{node.name}_act"
        graph.initializer.extend([numpy_helper.from_array(scale, f"{base}_scale"),
                                  numpy_helper.from_array(zero, f"{base}_zero_point")])
        q = helper.make_node("QuantizeLinear", [x, f"{base}_scale", f"{base}_zero_point"], [f"{base}_q"],
                             name=f"QuantizeLinear_{base}")
        dq = helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zero_point"],
                              [f"{base}_dq"], name=f"DequantizeLinear_{base}")
        at = list(graph.node).index(node)
        graph.node.insert(at, dq)
        graph.node.insert(at, q)
        node.input[0] = f"{base}_dq"
    return model
