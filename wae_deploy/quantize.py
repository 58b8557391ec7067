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


def quantize(model, calib: ImageSet, spec: Preprocessing, keep_float=(), input_name: str | None = None):
    """NNCF post-training quantization of an onnx.ModelProto or an openvino.Model."""
    import nncf

    with quiet():
        return nncf.quantize(model, calibration_dataset(calib, spec, input_name),
                             preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calib),
                             ignored_scope=ignored_scope(keep_float) if keep_float else None)


def quantize_with_accuracy_control(model, calib: ImageSet, held_out: ImageSet, spec: Preprocessing,
                                   max_drop_points: float, keep_float=(), input_name: str | None = None):
    """NNCF's per-layer search: reverts the most harmful layers to float until top-1 holds."""
    import nncf

    labels = held_out.labels

    def validate(compiled, items):  # compiled: an OpenVINO CompiledModel
        logits = np.concatenate([compiled(x)[0] for x in items])
        hits = (logits.argmax(1) == labels[:len(logits)]).astype(np.float32)
        return float(hits.mean()), list(hits)

    with quiet():
        return nncf.quantize_with_accuracy_control(
            model, calibration_dataset(calib, spec, input_name), calibration_dataset(held_out, spec, input_name),
            validate, max_drop=max_drop_points / 100.0, preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=len(calib), ignored_scope=ignored_scope(keep_float) if keep_float else None)
