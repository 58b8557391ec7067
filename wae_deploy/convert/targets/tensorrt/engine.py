"""The engine build: optimisation profiles, the builder configuration and the timing cache.

One strongly typed path for TensorRT 10.3+ and 11 (NetworkDefinitionCreationFlag.STRONGLY_TYPED
exists from 10.3 and is the only mode in 11, where the FP16/INT8 builder flags are gone): the ONNX
types (FP16 casts, Q/DQ nodes) choose the precision. fp32 clears TF32, which TensorRT sets by
default on Ampere and later (Orin included).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from wae_deploy.core import atomic
from wae_deploy.core.errors import UserError
from wae_deploy.runtime.onnx_meta import INPUT


def profile_shapes(hw: tuple[int, int], min_batch: int = 1, opt_batch: int = 8, max_batch: int = 32) -> dict:
    """One optimisation profile: {input: (min, opt, max) shapes} over the batch axis."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise UserError(f"profile batches must satisfy 1 <= min <= opt <= max, got {min_batch}/{opt_batch}/{max_batch}")
    h, w = hw
    return {INPUT: tuple((b, 3, h, w) for b in (min_batch, opt_batch, max_batch))}


def profiles(hw: tuple[int, int], min_batch: int, opt_batches: tuple[int, ...], max_batch: int) -> list[dict]:
    """One profile per batch that will be timed, each tuned (opt) for that batch and covering min..max.

    Kernels are chosen for a profile's opt shape: timing batch 1 on kernels tuned for batch 8 would
    measure the wrong engine. Every profile takes any batch up to max, so any one can serve a chunk.
    """
    return [profile_shapes(hw, min_batch, opt, max_batch) for opt in sorted(set(opt_batches))]


def build_options(precision: str, workspace_mb: int | None) -> dict:
    """What build_serialized() sets besides the network and profiles: part of the engine's identity."""
    return {"typing": "strong", "tf32": precision != "fp32", "workspace_mb": workspace_mb,
            "profiling_verbosity": "detailed"}


def build_serialized(trt, onnx_bytes: bytes, options: dict, shapes: list[dict], timing: Path) -> bytes:
    """The serialized engine; a CUDA context must be current (the selected GPU's)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    if options["workspace_mb"]:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options["workspace_mb"] << 20)
    if not options["tf32"]:
        config.clear_flag(trt.BuilderFlag.TF32)      # on by default from Ampere (Orin too): fp32 means fp32
    # Layer precisions and formats stay readable (IEngineInspector) for the manifest's "executed".
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    for shape in shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shape.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    # Layer timings survive across builds (same TensorRT + GPU only: that's in the file name).
    cache = _timing_cache(config, timing)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        warnings.warn(f"TensorRT did not take the timing cache {timing}; building without it", stacklevel=2)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError("TensorRT could not build the engine (its log above says why)")
    updated = config.get_timing_cache()
    if updated is not None:
        timing.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(timing, bytes(updated.serialize()))
    return bytes(plan)


def _timing_cache(config, timing: Path):
    """The saved timing cache, or a fresh one when it is missing or unreadable (then rebuilt)."""
    saved = timing.read_bytes() if timing.is_file() else b""
    cache = config.create_timing_cache(saved) if saved else None
    if saved and cache is None:
        warnings.warn(f"ignoring the corrupt TensorRT timing cache {timing}; it is rebuilt", stacklevel=3)
    cache = cache if cache is not None else config.create_timing_cache(b"")
    if cache is None:
        raise UserError("TensorRT could not create a timing cache (its log above says why)")
    return cache
