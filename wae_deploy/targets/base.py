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

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..data import ImageSet
from ..errors import UserError


class Runner(ABC):
    """A loaded artifact. Context manager: resources are held between __enter__ and __exit__."""

    def __enter__(self) -> Runner:
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
    # Whether build() takes accuracy_control=(held_out, max_drop_points): NNCF's per-layer
    # search, which keeps the layers that cost most accuracy in float.
    accuracy_control: bool = False

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, version) when this machine can build and run the target, else (False, reason)."""

    @abstractmethod
    def build(self, onnx_path: Path, precision: str, calib: ImageSet | None, out: Path,
              keep_float: tuple[str, ...] = (), meta: dict | None = None,
              accuracy_control: tuple[ImageSet, float] | None = None) -> dict:
        """Write the artifact folder for `precision` to `out` (atomically); return its manifest.

        `keep_float` names model parts (quantize.PARTS) or node-name patterns left unquantized;
        `meta` (source model, calibration set, tool versions) goes into the manifest;
        `accuracy_control` only where the target's `accuracy_control` says so.
        """

    @abstractmethod
    def load(self, artifact: Path, threads: int | None = None) -> Runner:
        """Load an artifact written by build()."""


MANIFEST = "manifest.json"


def write_manifest(folder: Path, manifest: dict) -> None:
    """Written last inside the artifact's temporary folder: no manifest, no artifact."""
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")


def read_manifest(artifact: Path, target: str, runtime_version: str) -> dict:
    """The artifact's manifest, refusing one built for another runtime or runtime version."""
    artifact = Path(artifact)
    path = artifact / MANIFEST
    if not path.is_file():
        raise UserError(f"not a wae-deploy artifact (no {MANIFEST}): {artifact}")
    try:
        manifest = json.loads(path.read_text())
        built_for, built_with = manifest["target"], manifest["runtime_version"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"corrupt artifact manifest: {path}") from e
    if built_for != target:
        raise UserError(f"{artifact} was built for target {built_for!r}, not {target!r}")
    if built_with != runtime_version:
        raise UserError(f"{artifact} was built with {target} {built_with}, this machine has {runtime_version}; "
                        "rebuild it with `wae-deploy build`")
    return manifest
