"""The one face every runtime shows: build an artifact from an exported ONNX model, load it, infer.

    target = get_target("openvino")
    art = target.build(onnx_path, precision="int8", calib=images, out=path)   # -> artifact.Artifact
    with target.load(art.path) as runner:
        logits = runner.infer(batch)          # N x 3 x H x W float32 -> N x classes float32

Adding a runtime means adding one module that defines a Target subclass and registering it
in targets/__init__.py. Heavy runtimes are imported inside methods, so the package imports
on a machine that lacks them, and `available()` says why a target cannot run here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..artifact import Artifact
from ..data import ImageSet


class Runner(ABC):
    """A loaded artifact. Context manager: resources are held between __enter__ and __exit__."""

    # The most images one runtime call takes (None: any); infer() serves a larger batch in chunks.
    max_batch: int | None = None

    def chunks(self, batch: np.ndarray) -> list[np.ndarray]:
        """The pieces infer() runs `batch` in, one runtime call each (the profiler runs the same ones)."""
        step = self.max_batch or len(batch) or 1
        return [batch[i:i + step] for i in range(0, len(batch), step)]

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W float32 (preprocessed) -> N x classes float32 logits."""


def run_fixed(call, batch: np.ndarray, fixed: int | None) -> np.ndarray:
    """`call` on one chunk; a model exported with a fixed batch gets its tail padded, the padding's outputs dropped."""
    n = len(batch)
    if fixed is None or n == fixed:
        return call(batch)
    padded = np.zeros((fixed, *batch.shape[1:]), batch.dtype)
    padded[:n] = batch
    return call(padded)[:n]


class Target(ABC):
    name: str
    precisions: tuple[str, ...]
    runtime: str             # the package it runs on: doctor checks it where the target itself cannot answer
    install: str             # the command that installs that package
    # Whether build() takes accuracy_control=(held_out, max_drop_points): NNCF's per-layer
    # search, which keeps the layers that cost most accuracy in float.
    accuracy_control: bool = False
    # A CPU runtime: INT8 builds take the CPU class's recipe (quantize.int8_plan) and build() takes
    # overflow_fix; the artifact records the class it was built and scored on.
    cpu: bool = False

    @classmethod
    def for_batches(cls, batches) -> Target:
        """The target set up for timing these batch sizes; only engines tuned per batch (TensorRT) care."""
        return cls()

    def same_build(self, manifest: dict) -> bool:
        """Whether an artifact with this manifest is what build() would make now, beyond its source and runtime:
        a CPU INT8 artifact scored on another CPU class, or built before the class's recipe, is not."""
        if not (self.cpu and manifest.get("precision") == "int8"):
            return True
        from ..machine import host_cpu_class

        return manifest.get("quantization") is not None and \
            (manifest.get("cpu") or {}).get("measured_on") == host_cpu_class()

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, version) when this machine can build and run the target, else (False, reason)."""

    @abstractmethod
    def build(self, onnx_path: Path, precision: str, calib: ImageSet | None, out: Path,
              keep_float: tuple[str, ...] = (), meta: dict | None = None,
              accuracy_control: tuple[ImageSet, float] | None = None) -> Artifact:
        """Write the artifact folder for `precision` to `out` (atomically, manifest via artifact.write).

        `keep_float` names model parts (quantize.PARTS) or node-name patterns left unquantized;
        `meta` (manifest keys the caller knows, e.g. the calibration set) goes into the manifest;
        `accuracy_control` only where the target's `accuracy_control` says so; the manifest's
        `accuracy_control` is then what NNCF reported (quantize.quantize_to_bound), else False.
        """

    @abstractmethod
    def load(self, artifact: Path, threads: int | None = None) -> Runner:
        """Load an artifact written by build(), refusing it (artifact.open) when built for another runtime."""
