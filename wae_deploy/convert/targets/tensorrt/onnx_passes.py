"""ONNX passes that prepare a model for a strongly typed TensorRT network, and check it first.

Pure ONNX (no TensorRT): the input's shape check, the Q/DQ checker and its uint8 -> int8 fix-up,
and the FP16 converter.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, inliner, numpy_helper

from wae_deploy.core.errors import UserError
from wae_deploy.runtime.onnx_meta import INPUT

FP16_MAX = 65504.0


def onnx_input_hw(model: onnx.ModelProto) -> tuple[int, int]:
    """(H, W) of the N x 3 x H x W input "images"; the batch axis must be dynamic for the profiles."""
    inputs = {i.name: i for i in model.graph.input}
    if INPUT not in inputs:
        raise UserError(f"the ONNX model has no input {INPUT!r} (inputs: {', '.join(inputs) or 'none'})")
    dims = inputs[INPUT].type.tensor_type.shape.dim
    if len(dims) != 4 or dims[1].dim_value != 3 or not (dims[2].dim_value and dims[3].dim_value):
        raise UserError(f"input {INPUT!r} must be N x 3 x H x W with fixed H and W")
    if dims[0].dim_value:
        raise UserError(f"input {INPUT!r} has a fixed batch of {dims[0].dim_value}: export with a dynamic batch axis")
    return dims[2].dim_value, dims[3].dim_value


# ---------------------------------------------------------------- Q/DQ models for TensorRT

def _constants(graph) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _qtype(node, consts) -> np.dtype | None:
    """The integer type a Q/DQ node works in; a QuantizeLinear without a zero point defaults to uint8."""
    if len(node.input) > 2 and node.input[2] in consts:
        return consts[node.input[2]].dtype
    if node.op_type == "QuantizeLinear":
        out = next((a.i for a in node.attribute if a.name == "output_dtype" and a.i), TensorProto.UINT8)
        return np.dtype(helper.tensor_dtype_to_np_dtype(out))
    return consts[node.input[0]].dtype if node.input[0] in consts else None


def check_qdq_for_tensorrt(model: onnx.ModelProto) -> list[str]:
    """Problems that stop TensorRT from using a Q/DQ model as INT8; [] when it is fine.

    TensorRT quantizes symmetrically in signed int8: zero points 0, activations per-tensor,
    Conv weights per-tensor or per output channel (axis 0); scales are build-time constants.
    """
    graph = model.graph
    consts = _constants(graph)
    producer = {out: node for node in graph.node for out in node.output}
    users = defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            users[name].append((node, i))
    outputs = {o.name for o in graph.output}
    problems = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = f"{node.op_type} {node.name or node.output[0]!r}"
        scale = consts.get(node.input[1])
        if scale is None:
            problems.append(f"{where}: scale is not a constant")
        elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            problems.append(f"{where}: scales must be positive and finite")
        qtype = _qtype(node, consts)
        if qtype is not None and qtype != np.int8:
            problems.append(f"{where}: {qtype} quantization; TensorRT needs int8")
        zero_point = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero_point is not None and np.any(zero_point != 0):
            problems.append(f"{where}: zero point is not 0 (asymmetric); TensorRT needs symmetric quantization")
        if node.op_type == "QuantizeLinear":
            after = users[node.output[0]]
            if node.output[0] in outputs or not after or any(u.op_type != "DequantizeLinear" for u, _ in after):
                problems.append(f"{where}: not followed by a DequantizeLinear")
            if node.input[0] not in consts and scale is not None and scale.size != 1:
                problems.append(f"{where}: per-channel activation quantizer; TensorRT needs per-tensor")
            continue
        # A DequantizeLinear feeding a Conv weight: pre-quantized int8 weights, or Q(weights) -> DQ.
        for user, slot in users[node.output[0]]:
            if user.op_type != "Conv" or slot != 1 or scale is None:
                continue
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            source = producer.get(node.input[0])
            weight = consts.get(node.input[0] if source is None else source.input[0])
            if scale.size == 1:
                continue            # per-tensor weights: TensorRT takes them (QAT exports often have them)
            if axis != 0:
                problems.append(f"{where}: weight quantizer on axis {axis} for Conv {user.name!r}; expected axis 0")
            elif weight is not None and scale.size != weight.shape[0]:
                problems.append(f"{where}: {scale.size} scales for {weight.shape[0]} output channels")
    return problems


def signed_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """uint8 quantizers with zero point 0 -> int8 with scale * 255/127 (same range, one bit less).

    NNCF's symmetric preset quantizes non-negative activations (after ReLU) as unsigned int8 with a
    zero point of 0; TensorRT has no uint8 Q/DQ, and its own INT8 keeps such tensors in [0, 127] too.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    consts = _constants(g)
    unsigned = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2
                and n.input[1] in consts and n.input[2] in consts
                and consts[n.input[2]].dtype == np.uint8 and not np.any(consts[n.input[2]])]
    new = {}
    for n in unsigned:
        new[n.input[1]] = (consts[n.input[1]] * np.float32(255 / 127)).astype(consts[n.input[1]].dtype)
        new[n.input[2]] = np.zeros_like(consts[n.input[2]], dtype=np.int8)
    for i, t in enumerate(g.initializer):
        if t.name in new:
            g.initializer[i].CopyFrom(numpy_helper.from_array(new[t.name], t.name))
    for node in g.node:
        if node.op_type == "Constant" and node.output[0] in new:
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(new[node.output[0]]))
    quantized = {n.output[0] for n in unsigned if n.op_type == "QuantizeLinear"}
    for vi in [*g.value_info, *g.output]:        # the quantized tensors' recorded types follow
        if vi.name in quantized and vi.type.tensor_type.elem_type == TensorProto.UINT8:
            vi.type.tensor_type.elem_type = TensorProto.INT8
    return model


# ---------------------------------------------------------------- FP16 ONNX for strongly typed TensorRT

_FLOAT32_ONLY = {("Resize", 2), ("Upsample", 1)}   # inputs the ONNX spec types as tensor(float) only


def _half(tensor: TensorProto) -> TensorProto:
    array = numpy_helper.to_array(tensor)
    # clip, don't overflow to inf: fp16 tops out at 65504
    return numpy_helper.from_array(np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16), tensor.name)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16-typed copy whose input and output stay float32 (Casts at the edges).

    Every float initializer, Constant and Cast-to-float becomes float16, so a strongly typed network
    (TensorRT 11) computes in FP16. Fine for CNN classifiers; models with numerically sensitive ops
    want a mixed-precision tool (NVIDIA's ModelOpt AutoCast) instead.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if model.functions:
        model = inliner.inline_local_functions(model)
    g = model.graph
    if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        raise UserError("FP16 conversion does not handle control-flow subgraphs (If/Loop/Scan)")
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    keep = {n.input[i] for n in g.node for op, i in _FLOAT32_ONLY if n.op_type == op and len(n.input) > i}
    for i, t in enumerate(g.initializer):
        if t.data_type == FLOAT and t.name not in keep:
            g.initializer[i].CopyFrom(_half(t))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR and attr.t.data_type == FLOAT and not keep & set(node.output):
                attr.t.CopyFrom(_half(attr.t))           # Constant, ConstantOfShape
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                attr.i = HALF
    for vi in g.value_info:
        if vi.type.tensor_type.elem_type == FLOAT and vi.name not in keep:
            vi.type.tensor_type.elem_type = HALF

    def rename(old: str, new: str) -> None:
        for node in g.node:
            node.input[:] = [new if name == old else name for name in node.input]
            node.output[:] = [new if name == old else name for name in node.output]

    initializers = {t.name for t in g.initializer}
    head, tail = [], []
    for inp in g.input:
        if inp.name not in initializers and inp.type.tensor_type.elem_type == FLOAT:
            rename(inp.name, inp.name + "_fp16")
            head.append(helper.make_node("Cast", [inp.name], [inp.name + "_fp16"], to=HALF, name=f"{inp.name}_to_fp16"))
    for out in g.output:
        if out.type.tensor_type.elem_type == FLOAT:
            rename(out.name, out.name + "_fp16")
            tail.append(helper.make_node("Cast", [out.name + "_fp16"], [out.name], to=FLOAT,
                                         name=f"{out.name}_to_fp32"))
    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    return model
