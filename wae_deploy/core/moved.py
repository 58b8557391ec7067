"""The module names from before the layout of 0.1 (a flat package), kept importable for a while.

`import wae_deploy.build` still gives `wae_deploy.convert.build`: the very module, imported for real
(so `wae_deploy.targets.onnxruntime` still imports without torch, as it did), with a
DeprecationWarning naming the new home. Nothing here imports a module until a user asks for an old
name. One thing differs from a real module of that name: Python binds an imported module on its
package, so after `import wae_deploy.build` (or .export, .bench) the package's attribute of that name
is the module, no longer the API function; use the new names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

# old name -> new name, for every module the flat package had (docs/architecture.md has the layout)
MOVED = {
    "artifact": "runtime.artifact", "data": "runtime.data", "doctor": "runtime.doctor",
    "imagenette": "runtime.imagenette", "machine": "runtime.machine", "metrics": "runtime.metrics",
    "onnx_meta": "runtime.onnx_meta", "predict": "runtime.predict", "preprocess": "runtime.preprocess",
    "profile": "runtime.layer_profile",
    "build": "convert.build", "qdq": "convert.qdq", "quantize": "convert.quantize",
    "targets": "convert.targets", "targets.base": "convert.targets.base",
    "targets.onnxruntime": "convert.targets.onnxruntime", "targets.openvino": "convert.targets.openvino",
    "targets.trt": "convert.targets.tensorrt", "targets.trt.layers": "convert.targets.tensorrt.layers",
    "targets.trt.cache": "runtime.backends.tensorrt.cache", "targets.trt.cuda": "runtime.backends.tensorrt.cuda",
    "targets.trt.runner": "runtime.backends.tensorrt.runner", "targets.torch_ref": "training.torch_target",
    "atomic": "core.atomic", "errors": "core.errors", "hashing": "core.hashing",
    "caffe": "training.caffe", "checkpoint": "training.checkpoint", "distributed": "training.distributed",
    "export": "training.export", "inspect": "training.inspection", "keymaps": "training.keymaps",
    "modelcard": "training.modelcard", "models": "training.models", "models.assemble": "training.models.assemble",
    "models.flops": "training.models.flops", "models.resnet": "training.models.resnet",
    "models.vgg": "training.models.vgg", "models.wae": "training.models.wae",
    "reference_table": "training.reference_table", "stream": "training.stream", "sync_bn": "training.sync_bn",
    "train": "training.train", "weights": "training.weights",
    "bench": "benchmark", "bench.environment": "benchmark.environment", "bench.gate": "benchmark.gate",
    "bench.latency": "runtime.latency", "bench.peak": "benchmark.peak", "bench.report": "benchmark.report",
    "bench.results": "benchmark.results", "bench.sources": "benchmark.sources", "bench.suite": "benchmark.suite",
}
PACKAGE = "wae_deploy"


def new_name(fullname: str) -> str | None:
    """The module's name now, for an old one (a module under a moved package moved with it), else None."""
    if not fullname.startswith(PACKAGE + "."):
        return None
    parts = fullname[len(PACKAGE) + 1:].split(".")
    for n in range(len(parts), 0, -1):
        moved = MOVED.get(".".join(parts[:n]))
        if moved:
            return ".".join([PACKAGE, moved, *parts[n:]])
    return None


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.machinery.ModuleSpec(fullname, self) if new_name(fullname) else None

    def create_module(self, spec):
        new = new_name(spec.name)
        warnings.warn(f"{spec.name} is now {new}; the old name will go in a later release",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)  # the module itself: one object under both names

    def exec_module(self, module):
        pass  # imported in full by create_module


def install() -> None:
    """First on sys.meta_path: under an old package name (now the new package, with its __path__), the
    path finder would otherwise load a second copy of each submodule."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
