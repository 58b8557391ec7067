"""The one face every runtime shows: build an artifact from an exported ONNX model, load it, infer.

    target = get_target("openvino")
    artifact = target.build(onnx_path, precision="int8", calib=images, out=path)   # -> Path
    with target.load(artifact) as runner:
        logits = runner.infer(batch)          # N x 3 x H x W float32 -> N x classes float32

Adding a runtime means adding one module that defines a Target subclass and registering it
in targets/__init__.py. Heavy runtimes are imported inside methods, so the package imports
on a machine that lacks them, and `available()` says why a target cannot run here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..data import ImageSet


class Runner(ABC):
    """A loaded artifact. Context manager: resources are held between __enter__ and __exit__."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W float32 (preprocessed) -> N x classes float32 logits."""


class Target(ABC):
    name: str
    precisions: tuple[str, ...]
    artifact_suffix: str

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, version) when this machine can build and run the target, else (False, reason)."""

    @abstractmethod
    def build(self, onnx_path: Path, precision: str, calib: ImageSet | None, out: Path) -> Path:
        """Write the artifact for `precision` to `out` (atomically) and return its path."""

    @abstractmethod
    def load(self, artifact: Path, threads: int | None = None) -> Runner:
        """Load an artifact written by build()."""
