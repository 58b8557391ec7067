"""INT8 post-training quantization through NNCF: one calibration recipe for every runtime.

The same recipe (symmetric INT8, per-channel weights: NNCF's "performance" preset) serves
ONNX Runtime and TensorRT (as a Q/DQ ONNX model) and OpenVINO (as an IR with FakeQuantize).
Parts of the model can be kept in float by module name: export names every node after
the module that made it ("decomposer.body.0/Conv"), so a part is a name prefix.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np

from wae_deploy.core.errors import UserError
from wae_deploy.core.extras import install_command
from wae_deploy.runtime.data import ImageSet
from wae_deploy.runtime.preprocess import Preprocessing

# What a WAE makes sensitive to INT8, in the order the accuracy-bounded build keeps it in
# float: the encoder (its 3- and 16-channel convolutions gain little from INT8 and feed
# everything), the low-energy high-frequency branch, then the fusion head. A module's own
# operations are named "<module>/Op" and its children's "<module>.<child>/Op" (the DWT's
# single convolution is "decomposer/Conv", the WAE's are "decomposer.body.0/Conv").
PARTS = {
    "encoder": r"^decomposer[./]",
    # The encoder's first convolution alone (the DWT's one convolution): it reads the raw image
    # through 3 input channels, where 7-bit weights (the overflow fix below) cost most.
    "encoder-first": r"^decomposer(\.body\.0)?/",
    "high": r"^(high|norm_high)[./]",
    "fusion": r"^fusion[./]",
}


@dataclass(frozen=True)
class Recipe:
    """How INT8 is built for one CPU class: NNCF's options and the parts kept in float from the start."""

    overflow_fix: bool
    keep_float: tuple[str, ...]
    why: str


# Measured on the Imagenette WAE and VGG16 (benchmarks/int8-isa-avx2.json). Without VNNI, u8 x s8
# products are summed in pairs into 16 bits with saturation (vpmaddubsw): NNCF's default cost the
# WAE 2.0 (ONNX Runtime) and 2.7 (OpenVINO) top-1 on an AVX2 host. 7-bit weights everywhere (the
# overflow fix) cannot saturate and gave back 0.8 / 1.5; the first encoder convolution (3 input
# channels) in float too leaves a drop of 0.8 / 0.7 on val and on 9,169 held-out training photos
# alike (99.1-99.3% of FP32), at about the default's speed. The whole encoder in float was 0.3
# more exact and 15% slower on OpenVINO: the guard's next step when a model needs it. AVX-512
# without VNNI has the same instruction (not measured: no such host yet). With VNNI or AMX the
# products are summed in 32 bits and NNCF's default kept 99%.
_NO_VNNI = Recipe(True, ("encoder-first",), "no VNNI (16-bit saturating INT8 sums): 7-bit weights, the WAE "
                                            "encoder's first convolution in float")
_VNNI = Recipe(False, (), "VNNI/AMX sum INT8 products in 32 bits: NNCF's default recipe")
RECIPES = {"avx2": _NO_VNNI, "avx512": _NO_VNNI, "avx512-vnni": _VNNI, "avx-vnni": _VNNI, "amx": _VNNI}
UNKNOWN = Recipe(True, ("encoder-first",), "unknown CPU class: the no-VNNI recipe, which is safe on any x86")


def int8_plan(cpu_class: str | None, decomposition: str | None, keep_float=(), cpu_target: bool = True,
              log=lambda line: None) -> tuple[tuple[str, ...], bool, dict]:
    """-> (parts kept in float, NNCF's overflow fix, the manifest's `quantization`) for one INT8 build.

    `cpu_target`: the CPU class's recipe applies to ONNX Runtime and OpenVINO; a GPU engine gets neither.
    """
    kept = list(keep_float)
    recipe = RECIPES.get(cpu_class, UNKNOWN) if cpu_target else Recipe(False, (), "GPU: NNCF's default recipe")
    if decomposition == "dwt" and "encoder" not in kept:
        # Rounded to INT8, the fixed 9/7 filters no longer sum to zero: the diagonal band passes
        # 0.13 of the image's local mean, which its normalisation then magnifies (Imagenette:
        # -5.2 top-1, -0.7 to -0.9 with the wavelet in float; benchmarks/dwt-int8.json). It is
        # one small grouped convolution, so float costs next to nothing, on every target.
        kept.insert(0, "encoder")
        log("  INT8 keeps the 9/7 wavelet in float (its rounded filters leak the image mean into the high bands)")
    if decomposition in ("wae", "dwt"):
        kept = [*recipe.keep_float, *kept]
    kept = tuple(dict.fromkeys(p for p in kept if not (p == "encoder-first" and "encoder" in kept)))
    if cpu_target:
        log(f"  INT8 recipe for {cpu_class or 'an unknown CPU class'}: {recipe.why}")
    return kept, recipe.overflow_fix, {"cpu_class": cpu_class if cpu_target else None,
                                       "overflow_fix": recipe.overflow_fix,
                                       "recipe_keep_float": list(recipe.keep_float), "why": recipe.why}


def ignored_scope(keep_float: tuple[str, ...] | list[str]):
    import nncf

    return nncf.IgnoredScope(patterns=[PARTS.get(p, p) for p in keep_float], validate=False)


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
    return dict(preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calib),
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
