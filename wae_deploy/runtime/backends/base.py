"""The one face every runtime shows a device: load an artifact, infer.

    backend = get_backend("openvino")
    with backend.load(artifact_path) as runner:
        logits = runner.infer(batch)          # N x 3 x H x W float32 -> N x classes float32

Heavy runtimes are imported inside methods, so the package imports on a machine that lacks
them, and `available()` says why a backend cannot run here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from wae_deploy.core.errors import UserError
from wae_deploy.runtime import artifact
from wae_deploy.runtime.machine import package_version


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


class Backend(ABC):
    name: str
    precisions: tuple[str, ...]
    runtime: str             # the package it runs on: doctor checks it where the backend itself cannot answer
    install: str             # the command that installs that package
    # A CPU runtime: its INT8 artifacts depend on the CPU class they were built for (convert.int8_policy).
    cpu: bool = False

    def version(self) -> str | None:
        """The installed runtime's version, from package metadata (nothing is imported)."""
        return package_version(self.runtime)

    def available(self) -> tuple[bool, str]:
        """(True, version) when this machine can run the target, else (False, reason)."""
        v = self.version()
        return (True, v) if v else (False, f"{self.runtime} is not installed ({self.install})")

    def open(self, path: Path) -> artifact.Artifact:
        """The artifact at `path` for this runtime, as installed: refused when its runtime is missing, or
        when it was built for another runtime or version (artifact.open)."""
        v = self.version()
        if v is None:
            raise UserError(self.available()[1])
        return artifact.open(path, self.name, v)

    @abstractmethod
    def load(self, artifact: Path, threads: int | None = None) -> Runner:
        """Load an artifact, refusing it (artifact.open) when built for another runtime."""
