"""Builders: a Target per runtime, which is its backend (runtime/backends/) plus build().

Names, aliases and precisions are the backends' (runtime.backends); build and bench ask here.
"""

from __future__ import annotations

from wae_deploy.convert.targets.base import Target
from wae_deploy.runtime.backends import NAMES, PRECISIONS, Runner, canonical, resolve

# name -> "module:class", as runtime.backends. PyTorch's target builds from a checkpoint: training's.
_REGISTRY = {
    "torch": "wae_deploy.training.torch_target:TorchTarget",
    "ort": "wae_deploy.convert.targets.onnxruntime:OnnxRuntimeTarget",
    "openvino": "wae_deploy.convert.targets.openvino:OpenVINOTarget",
    "trt": "wae_deploy.convert.targets.tensorrt:TensorRTTarget",
}


def target_class(name: str) -> type[Target]:
    """The Target subclass, without instantiating it (its runtime is not imported)."""
    return resolve(_REGISTRY[canonical(name)])


def get_target(name: str) -> Target:
    return target_class(name)()


__all__ = ["NAMES", "PRECISIONS", "Runner", "Target", "canonical", "get_target", "target_class"]
