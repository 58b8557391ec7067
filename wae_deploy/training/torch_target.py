"""PyTorch on the CPU, FP32: the reference every runtime's accuracy is checked against.

Its artifact holds the checkpoint the ONNX model was exported from, found beside the ONNX
file (same name, .pt) and matched by the SHA-256 that export wrote into the metadata.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from wae_deploy.convert.targets.base import Target
from wae_deploy.core import atomic
from wae_deploy.core.errors import UserError
from wae_deploy.core.extras import install_command
from wae_deploy.runtime import artifact, onnx_meta
from wae_deploy.runtime.artifact import Artifact
from wae_deploy.runtime.backends.base import Runner
from wae_deploy.runtime.data import ImageSet
from wae_deploy.training import checkpoint

CKPT = "model.pt"


def _version() -> str:
    import torch

    return str(torch.__version__)


class TorchRunner(Runner):
    def __init__(self, path: Path, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = checkpoint.load(path).build_model()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(batch)).numpy()


class TorchTarget(Target):
    name = "torch"
    precisions = ("fp32",)
    runtime = "torch"
    install = install_command("torch")

    def available(self) -> tuple[bool, str]:
        try:
            return True, _version()
        except ImportError:
            return False, f"torch is not installed ({self.install})"

    def build(self, onnx_path: Path, precision: str, calib: ImageSet | None, out: Path,
              keep_float: tuple[str, ...] = (), meta: dict | None = None) -> Artifact:
        info = onnx_meta.read(onnx_path)
        ckpt = Path(onnx_path).with_suffix(".pt")
        if not ckpt.is_file() or checkpoint.sha256(ckpt) != info.checkpoint_sha256:
            raise UserError(f"the torch target needs the checkpoint {onnx_path} was exported from, "
                            f"beside it as {ckpt.name}")
        with atomic.atomic_dir(out) as tmp:
            shutil.copyfile(ckpt, tmp / CKPT)
            manifest = artifact.new_manifest(onnx_path, info, self.name, precision, _version(), **(meta or {}),
                                             executed={"fp32": "all layers"})
            return artifact.write(tmp, out, manifest)

    def load(self, path: Path, threads: int | None = None) -> Runner:
        return TorchRunner(artifact.open(path, self.name, _version()).file(CKPT), threads)
