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

import numpy as np

from .data import ImageSet
from .errors import UserError
from .preprocess import Preprocessing

# What a WAE makes sensitive to INT8, in the order the accuracy-bounded build keeps it in
# float: the encoder (its 3- and 16-channel convolutions gain little from INT8 and feed
# everything), the low-energy high-frequency branch, then the fusion head.
PARTS = {
    "encoder": r"^decomposer\.",
    "high": r"^(high\.|norm_high)",
    "fusion": r"^fusion\.",
}


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


def quantize(model, calib: ImageSet, spec: Preprocessing, keep_float=(), input_name: str | None = None,
             accuracy_control: tuple[ImageSet, float] | None = None):
    """NNCF post-training quantization of an onnx.ModelProto or an openvino.Model.

    With `accuracy_control=(held_out, max_drop_points)`, NNCF's per-layer search: it ranks the
    quantized layers by the top-1 they cost on `held_out` and reverts the worst to float until
    the drop is at most `max_drop_points`.
    """
    try:
        import nncf
    except ImportError as e:      # every INT8 build from a plain ONNX lands here, whatever the target
        raise UserError(f"INT8 from a plain ONNX model needs nncf: pip install 'nncf>=2.16' ({e})") from e

    common = dict(preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calib),
                  ignored_scope=ignored_scope(keep_float) if keep_float else None)
    with quiet():
        if accuracy_control is None:
            return nncf.quantize(model, calibration_dataset(calib, spec, input_name), **common)
        held_out, max_drop_points = accuracy_control
        return nncf.quantize_with_accuracy_control(
            model, calibration_dataset(calib, spec, input_name), calibration_dataset(held_out, spec, input_name),
            _top1_validator(held_out, spec), max_drop=max_drop_points / 100.0, **common)


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
