"""Each runtime's loader and runner, by the name users type: `--target ort|openvino|trt|torch`.

The one place target names, aliases and precisions are declared: doctor, predict, build and
bench ask here. A backend loads an artifact and infers; building one is convert.targets' job
(the way Polygraphy keeps loaders apart from runners, and MMDeploy its runtime from its
converter), so a device that only runs artifacts never imports a builder.

Adding a runtime: a module here with a Backend subclass (available, load) and its Runner, a
builder in convert/targets/, and one line in each registry.
"""

from __future__ import annotations

import importlib

from wae_deploy.core.errors import UserError
from wae_deploy.runtime.backends.base import Backend, Runner

# name -> "module:class"; modules import their runtime lazily, so listing costs nothing. PyTorch
# runs a checkpoint, so its backend lives with training and is loaded only when asked for by name.
_REGISTRY = {
    "torch": "wae_deploy.training.torch_target:TorchTarget",
    "ort": "wae_deploy.runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "wae_deploy.runtime.backends.openvino:OpenVINOBackend",
    "trt": "wae_deploy.runtime.backends.tensorrt:TensorRTBackend",
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


def resolve(entry: str) -> type:
    """'package.module:Class' -> the class (its module imported now, its runtime not)."""
    module, _, cls = entry.partition(":")
    return getattr(importlib.import_module(module), cls)


def backend_class(name: str) -> type[Backend]:
    return resolve(_REGISTRY[canonical(name)])


def get_backend(name: str) -> Backend:
    return backend_class(name)()


__all__ = ["ALIASES", "NAMES", "PRECISIONS", "Backend", "Runner", "backend_class", "canonical", "get_backend",
           "resolve"]
