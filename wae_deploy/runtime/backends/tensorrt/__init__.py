"""TensorRT on NVIDIA GPUs and Jetson: loads an artifact's engine.plan and infers.

One job a module, the way Polygraphy keeps loaders and runners apart:
  cuda    TensorRT and pycuda imported on first use; the GPU's identity and context
  cache   engine identity, the cache key, engines and sidecars on disk
  runner  the loaded engine: buffers, profile selection, chunked inference
and here the backend, which loads an engine after checking it was built for this GPU and
TensorRT. `tensorrt` and `pycuda` are imported inside functions, so this package imports and is
tested on machines without them. Building engines is convert.targets.tensorrt's job.
"""

from __future__ import annotations

from pathlib import Path

from wae_deploy.core.errors import UserError
from wae_deploy.core.extras import install_command
from wae_deploy.runtime import artifact
from wae_deploy.runtime.backends.base import Backend, Runner
from wae_deploy.runtime.backends.tensorrt.cache import cc_str, check_engine_identity, read_engine
from wae_deploy.runtime.backends.tensorrt.cuda import gpu_identity, import_runtime
from wae_deploy.runtime.backends.tensorrt.runner import TensorRTRunner

ENGINE = "engine.plan"    # inside the artifact folder, beside manifest.json


class TensorRTBackend(Backend):
    name = "trt"
    precisions = ("fp32", "fp16", "int8")
    runtime = "tensorrt"
    install = install_command("tensorrt")

    def __init__(self, device: int = 0):
        self.device = device

    def available(self) -> tuple[bool, str]:
        try:
            trt, cuda = import_runtime()
            gpu, cc, sms = gpu_identity(cuda, self.device)
        except UserError as e:
            return False, str(e)
        return True, f"TensorRT {trt.__version__} on {gpu} (sm {cc_str(cc)}, {sms} SMs)"

    def load(self, path: Path, threads: int | None = None) -> Runner:
        # threads: CPU backends use it; a GPU engine has nothing to set.
        trt, cuda = import_runtime()
        plan, meta = read_engine(artifact.open(path, self.name, trt.__version__).file(ENGINE))
        gpu, cc, sms = gpu_identity(cuda, self.device)
        check_engine_identity(meta, trt.__version__, gpu, cc, sms, path)
        return TensorRTRunner(trt, cuda, plan, self.device)


__all__ = ["ENGINE", "TensorRTBackend", "TensorRTRunner"]
