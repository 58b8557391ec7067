"""A target is a runtime backend that can also build: exported ONNX model -> artifact folder.

    target = get_target("openvino")
    art = target.build(onnx_path, precision="int8", calib=images, out=path)   # -> artifact.Artifact
    with target.load(art.path) as runner:                                     # the backend's load
        logits = runner.infer(batch)

Adding a runtime means a backend in runtime/backends/ and here a Target subclass of it that
builds, registered in convert/targets/__init__.py.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

from wae_deploy.runtime.artifact import Artifact
from wae_deploy.runtime.backends.base import Backend
from wae_deploy.runtime.data import ImageSet
from wae_deploy.runtime.machine import host_cpu_class


class Target(Backend):
    # Whether build() takes accuracy_control=(held_out, max_drop_points): NNCF's per-layer
    # search, which keeps the layers that cost most accuracy in float.
    accuracy_control: bool = False

    @classmethod
    def for_batches(cls, batches) -> Target:
        """The target set up for timing these batch sizes; only engines tuned per batch (TensorRT) care."""
        return cls()

    def same_build(self, manifest: dict) -> bool:
        """Whether an artifact with this manifest is what build() would make now, beyond its source and runtime:
        a CPU INT8 artifact scored on another CPU class, or built before the class's recipe, is not."""
        if not (self.cpu and manifest.get("precision") == "int8"):
            return True
        return manifest.get("quantization") is not None and \
            (manifest.get("cpu") or {}).get("measured_on") == host_cpu_class()

    @abstractmethod
    def build(self, onnx_path: Path, precision: str, calib: ImageSet | None, out: Path,
              keep_float: tuple[str, ...] = (), meta: dict | None = None,
              accuracy_control: tuple[ImageSet, float] | None = None) -> Artifact:
        """Write the artifact folder for `precision` to `out` (atomically, manifest via artifact.write).

        `keep_float` names model parts (int8_policy.PARTS) or node-name patterns left unquantized;
        `meta` (manifest keys the caller knows, e.g. the calibration set) goes into the manifest;
        `accuracy_control` only where the target's `accuracy_control` says so; the manifest's
        `accuracy_control` is then what NNCF reported (quantize.quantize_to_bound), else False.
        A CPU target's build also takes `overflow_fix` (the CPU class's INT8 recipe).
        """
