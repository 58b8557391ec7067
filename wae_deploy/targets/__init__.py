"""Runtime targets, by the name users type: `--target ort|openvino|trt|torch`."""

from __future__ import annotations

import importlib

from ..errors import UserError
from .base import Runner, Target

# name -> (module, class); modules import their runtime lazily, so listing costs nothing.
_REGISTRY = {
    "torch": ("torch_ref", "TorchTarget"),
    "ort": ("onnxruntime", "OnnxRuntimeTarget"),
    "openvino": ("openvino", "OpenVINOTarget"),
    "trt": ("tensorrt", "TensorRTTarget"),
}
ALIASES = {"onnxruntime": "ort", "ov": "openvino", "tensorrt": "trt", "pytorch": "torch"}
NAMES = tuple(_REGISTRY)


def get_target(name: str) -> Target:
    key = ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise UserError(f"unknown target {name!r}; known: {', '.join(NAMES)}")
    module, cls = _REGISTRY[key]
    return getattr(importlib.import_module(f".{module}", __name__), cls)()


__all__ = ["NAMES", "Runner", "Target", "get_target"]
