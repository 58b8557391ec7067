"""Runtime targets, by the name users type: `--target ort|openvino|trt|torch`.

The one place target names, aliases and precisions are declared: doctor, build and bench ask here.
"""

from __future__ import annotations

import importlib

from ..errors import UserError
from .base import Runner, Target

# name -> (module, class); modules import their runtime lazily, so listing costs nothing.
_REGISTRY = {
    "torch": ("torch_ref", "TorchTarget"),
    "ort": ("onnxruntime", "OnnxRuntimeTarget"),
    "openvino": ("openvino", "OpenVINOTarget"),
    "trt": ("trt", "TensorRTTarget"),
}
ALIASES = {"onnxruntime": "ort", "ov": "openvino", "tensorrt": "trt", "pytorch": "torch"}
NAMES = tuple(_REGISTRY)
# Every precision some target builds, in the order tables show them.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def canonical(name: str) -> str:
    """'tensorrt' -> 'trt'; an unknown name is a UserError."""
    key = ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise UserError(f"unknown target {name!r}; known: {', '.join(NAMES)}")
    return key


def target_class(name: str) -> type[Target]:
    """The Target subclass, without instantiating it (its runtime is not imported)."""
    module, cls = _REGISTRY[canonical(name)]
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def get_target(name: str) -> Target:
    return target_class(name)()


__all__ = ["NAMES", "PRECISIONS", "Runner", "Target", "canonical", "get_target", "target_class"]
