"""TensorRT builder: exported ONNX -> serialized engine (engine.plan) for NVIDIA GPUs and Jetson.

One job a module, the way Polygraphy keeps loaders and runners apart:
  onnx_passes  the ONNX input check, Q/DQ checks and fix-up, FP16 typing (pure ONNX)
  engine       optimisation profiles, builder configuration, timing cache
  layers       what the engine runs in which precision (IEngineInspector)
and here the target, which ties them together with the backend (runtime.backends.tensorrt:
CUDA glue, engine cache, runner). `tensorrt` and `pycuda` are imported inside methods, so this
package (and its pure-ONNX passes and cache keys) imports and is tested on machines without them.

Two TensorRT generations are supported, because JetPack 6.1/6.2 (Orin) ships 10.3 while desktops
move on; both build one strongly typed way (engine.py). For int8 a plain ONNX is quantized with the
project's NNCF recipe (convert.int8_policy), so one calibration serves every runtime; a Q/DQ ONNX is
taken as it is.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from wae_deploy.convert.targets.base import Target
from wae_deploy.convert.targets.tensorrt.engine import build_options, build_serialized, profile_shapes, profiles
from wae_deploy.convert.targets.tensorrt.layers import executed_precisions
from wae_deploy.convert.targets.tensorrt.onnx_passes import (
    check_qdq_for_tensorrt,
    onnx_input_hw,
    signed_qdq,
    to_fp16,
)
from wae_deploy.core import atomic
from wae_deploy.core.errors import UserError
from wae_deploy.runtime import artifact, onnx_meta
from wae_deploy.runtime.artifact import Artifact
from wae_deploy.runtime.backends.tensorrt import ENGINE, TensorRTBackend
from wae_deploy.runtime.backends.tensorrt.cache import EngineCache, cc_str, engine_cache_key, write_engine
from wae_deploy.runtime.backends.tensorrt.cuda import gpu_identity, import_runtime, on_device
from wae_deploy.runtime.data import ImageSet
from wae_deploy.runtime.onnx_meta import INPUT


class TensorRTTarget(TensorRTBackend, Target):

    def __init__(self, min_batch: int = 1, opt_batch: int | tuple[int, ...] = 8, max_batch: int = 32,
                 device: int = 0, workspace_mb: int | None = None, cache_root: Path | None = None):
        """opt_batch: one optimisation profile per value, each tuned for that batch (bench passes its batches)."""
        self.opt_batches = tuple(sorted({opt_batch} if isinstance(opt_batch, int) else set(opt_batch)))
        for opt in self.opt_batches:
            profile_shapes((1, 1), min_batch, opt, max_batch)     # validate early
        super().__init__(device)
        self.min_batch, self.max_batch = min_batch, max_batch
        self.workspace_mb = workspace_mb
        self.cache = EngineCache(cache_root)

    @classmethod
    def for_batches(cls, batches, **kwargs) -> TensorRTTarget:
        """A target whose engines carry one profile tuned for each batch, taking any batch up to max(32, batches)."""
        return cls(min_batch=1, opt_batch=tuple(batches), max_batch=max(32, *batches), **kwargs)

    def same_build(self, manifest: dict) -> bool:
        """Same profiles' batches (min, opt, max): an engine tuned for other batches is rebuilt."""
        built = [[shape[0] for shape in p[INPUT]] for p in manifest.get("details", {}).get("profiles") or []]
        return built == [[self.min_batch, opt, self.max_batch] for opt in self.opt_batches]

    def build(self, onnx_path: Path, precision: str, calib: ImageSet | None, out: Path,
              keep_float: tuple[str, ...] = (), meta: dict | None = None) -> Artifact:
        if precision not in self.precisions:
            raise UserError(f"TensorRT precisions are {', '.join(self.precisions)}, not {precision!r}")
        trt, cuda = import_runtime()
        model = onnx_meta.load_model(onnx_path)
        info = onnx_meta.from_model(model, str(onnx_path))
        has_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
        if precision == "int8":
            if not has_qdq:
                if calib is None:
                    raise UserError(f"{onnx_path} has no Q/DQ nodes and no calibration set was given")
                # The same NNCF recipe as the CPU targets: one calibration serves every runtime.
                from wae_deploy.convert.quantize import quantize

                model = quantize(model, calib, info.preprocessing, keep_float, input_name=model.graph.input[0].name)
            model = signed_qdq(model)         # NNCF's unsigned post-ReLU quantizers -> int8
            problems = check_qdq_for_tensorrt(model)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise UserError(f"{onnx_path} cannot run as TensorRT INT8: {problems[0]}{more}")
        elif has_qdq:
            raise UserError(f"{onnx_path} is a Q/DQ model: build it with --precision int8")
        shapes = profiles(onnx_input_hw(model), self.min_batch, self.opt_batches, self.max_batch)
        if precision == "fp16":
            model = to_fp16(model)           # strongly typed: the ONNX types choose the precision
        onnx_bytes = model.SerializeToString()
        gpu, cc, sms = gpu_identity(cuda, self.device)
        options = build_options(precision, self.workspace_mb)
        key = engine_cache_key(hashlib.sha256(onnx_bytes).hexdigest(), trt.__version__, gpu, cc, precision, shapes,
                               sms, options)
        stamp = {"tensorrt": trt.__version__, "gpu": gpu, "compute_capability": cc_str(cc), "sm_count": sms,
                 "precision": precision, "profiles": shapes, "build_options": options, "key": key}
        plan = self.cache.get(key)
        if plan is None:
            timing = self.cache.timing_cache_path(trt.__version__, gpu, cc, sms)
            plan = self._build_engine(trt, cuda, onnx_bytes, precision, shapes, timing)
            self.cache.put(key, plan, stamp)
        executed = self._read_executed(trt, cuda, plan)
        return self._write_artifact(out, plan, stamp, onnx_path, info, meta, keep_float, executed)

    def _write_artifact(self, out: Path, plan: bytes, stamp: dict, onnx_path: Path, info, meta: dict | None,
                        keep_float, executed: dict) -> Artifact:
        """The artifact folder (engine + sidecar + manifest), all or nothing; the one place it is written."""
        details = {k: v for k, v in stamp.items() if k not in ("tensorrt", "precision", "key")}
        manifest = artifact.new_manifest(onnx_path, info, self.name, stamp["precision"], stamp["tensorrt"],
                                         **(meta or {}), keep_float=list(keep_float), executed=executed,
                                         details={**details, "cache_key": stamp["key"]})
        with atomic.atomic_dir(out) as tmp:
            write_engine(tmp / ENGINE, plan, stamp)
            return artifact.write(tmp, out, manifest)

    def _build_engine(self, trt, cuda, onnx_bytes: bytes, precision: str, shapes: list[dict], timing: Path) -> bytes:
        # The build runs on the selected GPU: its primary context is current for the whole build.
        with on_device(cuda, self.device):
            return build_serialized(trt, onnx_bytes, build_options(precision, self.workspace_mb), shapes, timing)

    def _read_executed(self, trt, cuda, plan: bytes) -> dict:
        """The manifest's "executed": the layers' precisions as the built engine reports them."""
        with on_device(cuda, self.device):
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise UserError("TensorRT could not deserialize the engine it built (its log above says why)")
            try:
                return executed_precisions(trt, engine)
            finally:
                del engine, runtime      # released while the context is still current


__all__ = ["TensorRTTarget"]
