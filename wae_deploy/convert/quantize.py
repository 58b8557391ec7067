"""INT8 post-training quantization through NNCF, as int8_policy decides it: its preset, the parts
kept in float (an ignored scope of node-name patterns), the CPU class's overflow fix; and NNCF's
per-layer accuracy search, with what it left in float read back from the model it returned.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np

from wae_deploy.convert.int8_policy import PRESET, float_patterns
from wae_deploy.core.errors import UserError
from wae_deploy.core.extras import install_command
from wae_deploy.runtime.data import ImageSet
from wae_deploy.runtime.preprocess import Preprocessing


def ignored_scope(keep_float: tuple[str, ...] | list[str]):
    """NNCF's scope of nodes left in float: the parts' name patterns (int8_policy.float_patterns)."""
    import nncf

    return nncf.IgnoredScope(patterns=float_patterns(keep_float), validate=False)


def calibration_dataset(calib: ImageSet, spec: Preprocessing, input_name: str | None = None):
    """One preprocessed image per item, as NNCF counts subset_size in items."""
    import nncf

    def item(i: int):
        x = spec.normalize(calib.images[i:i + 1])
        return {input_name: x} if input_name else x

    return nncf.Dataset(range(len(calib)), item)


@contextlib.contextmanager
def quiet():
    """NNCF logs progress bars and advice at INFO; keep the CLI's own output readable."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logger.setLevel(level)


def _nncf():
    try:
        import nncf
    except ImportError as e:      # every INT8 build from a plain ONNX lands here, whatever the target
        raise UserError(f"INT8 from a plain ONNX model needs nncf: {install_command('nncf')} ({e})") from e
    return nncf


def _common(nncf, calib: ImageSet, keep_float) -> dict:
    return dict(preset=nncf.QuantizationPreset(PRESET), subset_size=len(calib),
                ignored_scope=ignored_scope(keep_float) if keep_float else None)


def _advanced(overflow_fix: bool):
    """NNCF's advanced parameters: None (its defaults) unless the CPU class wants 7-bit weights in every
    layer, so that u8 x s8 pairs summed in 16 bits cannot saturate (NNCF's default: the first layer only)."""
    if not overflow_fix:
        return None
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    return AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)


def quantize(model, calib: ImageSet, spec: Preprocessing, keep_float=(), input_name: str | None = None,
             overflow_fix: bool = False):
    """NNCF post-training quantization of an onnx.ModelProto or an openvino.Model."""
    nncf = _nncf()
    with quiet():
        return nncf.quantize(model, calibration_dataset(calib, spec, input_name),
                             advanced_parameters=_advanced(overflow_fix), **_common(nncf, calib, keep_float))


def quantize_to_bound(model, calib: ImageSet, spec: Preprocessing, held_out: ImageSet, max_drop_points: float,
                      keep_float=(), input_name: str | None = None, overflow_fix: bool = False):
    """NNCF's per-layer search: -> (quantized model, what NNCF did for the manifest's `accuracy_control`).

    NNCF ranks the quantized layers by the top-1 they cost on `held_out` and reverts the worst
    to float until the drop is at most `max_drop_points`. The report is read from the model NNCF
    returned (the layers it left in float), so a manifest cannot claim a search that never ran.
    """
    nncf = _nncf()
    with quiet():
        result = nncf.quantize_with_accuracy_control(
            model, calibration_dataset(calib, spec, input_name), calibration_dataset(held_out, spec, input_name),
            _top1_validator(held_out, spec), max_drop=max_drop_points / 100.0,
            advanced_quantization_parameters=_advanced(overflow_fix), **_common(nncf, calib, keep_float))
    return result, {"max_drop": max_drop_points, "held_out": len(held_out), "float_layers": float_layers(result)}


# Layers INT8 speeds up, and the operations that may stand between a weight and its layer.
ONNX_LAYERS = ("Conv", "Gemm", "MatMul")
OV_LAYERS = ("Convolution", "GroupConvolution", "MatMul")
_PASS_THROUGH = ("Convert", "Multiply", "Subtract", "Reshape", "Transpose", "Unsqueeze", "Squeeze")


def float_layers(model) -> list[str]:
    """Names of the heavy layers whose weights are not quantized, in an NNCF-quantized model.

    ONNX (Q/DQ): the weight does not come through a DequantizeLinear. OpenVINO: no FakeQuantize
    and no integer constant on the weight's path (NNCF may have compressed the weight already).
    """
    if hasattr(model, "graph"):
        producer = {out: n for n in model.graph.node for out in n.output}

        def quantized(name: str) -> bool:
            node = producer.get(name)
            while node is not None and node.op_type in ("Transpose", "Reshape"):
                node = producer.get(node.input[0])
            return node is not None and node.op_type == "DequantizeLinear"

        return [n.name for n in model.graph.node if n.op_type in ONNX_LAYERS and not quantized(n.input[1])]

    def quantized_ov(node, depth: int = 0) -> bool:
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return node.get_element_type().get_type_name() in ("i8", "u8", "i4", "u4")
        if kind not in _PASS_THROUGH or depth > 8:
            return False
        return any(quantized_ov(i.get_source_output().get_node(), depth + 1) for i in node.inputs())

    # OpenVINO names a layer split from its bias after the ONNX node: the ONNX name is the one users know
    return [op.get_friendly_name().removesuffix("/WithoutBiases") for op in model.get_ordered_ops()
            if op.get_type_name() in OV_LAYERS and not quantized_ov(op.input(1).get_source_output().get_node())]


def _top1_validator(held_out: ImageSet, spec: Preprocessing, batch: int = 100):
    """NNCF's validation_fn: (model, raw items) -> (top-1, a hit per item).

    The raw items are image indices (a subset while NNCF ranks layers), so the transform and
    the labels are applied here, a batch at a time. The model is an OpenVINO CompiledModel,
    or an onnx.ModelProto that needs a session; NNCF calls this once per item while ranking,
    so the session of the last model is kept.
    """
    last = {}

    def infer(model, x):
        if hasattr(model, "SerializeToString"):
            if last.get("model") is not model:
                import onnxruntime as ort

                sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
                last.update(model=model, sess=sess, name=sess.get_inputs()[0].name)
            return last["sess"].run(None, {last["name"]: x})[0]
        return model(x)[0]

    def validate(model, items):
        idx = np.fromiter(items, dtype=np.int64)
        chunks = [idx[i:i + batch] for i in range(0, len(idx), batch)]
        hits = [float(h) for c in chunks
                for h in infer(model, spec.normalize(held_out.images[c])).argmax(1) == held_out.labels[c]]
        return float(np.mean(hits)) if hits else 0.0, hits

    return validate
