"""OpenVINO on x86 CPUs: FP32, BF16, FP16 weights and INT8 (NNCF) IRs.

The CPU plugin defaults to BF16 math on CPUs with AVX512-BF16 or AMX, so FP32 must ask
for f32 explicitly. An FP16 IR only stores FP16 weights: a CPU decompresses them and
computes in f32 (as run here), which is why its speed is that of FP32.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from .. import artifact, atomic, onnx_meta
from ..artifact import Artifact
from ..data import ImageSet
from ..errors import UserError
from ..machine import cpu_has
from .base import Runner, Target, run_fixed

XML = "model.xml"
# Precision the CPU plugin computes the float parts in, per artifact precision.
COMPUTE = {"fp32": "f32", "fp16": "f32", "bf16": "bf16", "int8": "f32"}
HEAVY_OPS = ("Convolution", "FullyConnected", "MatMul", "GroupConvolution", "Deconvolution")


def _version() -> str | None:
    try:
        return importlib.metadata.version("openvino")
    except importlib.metadata.PackageNotFoundError:
        return None


def compile_model(path_or_model, precision: str, threads: int | None = None, profiling: bool = False):
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": COMPUTE[precision], "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads or os.cpu_count() or 1)}
    if profiling:  # per-layer counters, read with InferRequest.get_profiling_info()
        config["PERF_COUNT"] = True
    core = ov.Core()
    model = core.read_model(str(path_or_model)) if isinstance(path_or_model, (str, Path)) else path_or_model
    return core.compile_model(model, "CPU", config)


def _layer_type(op) -> str:
    info = op.get_rt_info()
    return info["layerType"].astype(str) if "layerType" in info else op.get_type_name()


def executed_precisions(compiled) -> dict:
    """Weighted layers counted by the precision the CPU plugin actually runs them in ("layers"), and
    those whose weight is computed on every call rather than read from a constant (a dequantizing
    subgraph the plugin did not fold): "weight_dequantized_per_call"."""
    counts: Counter = Counter()
    per_call = []
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = _layer_type(op)
        if layer in HEAVY_OPS and op.get_input_size() > 1 and \
                _layer_type(op.input(1).get_source_output().get_node()) not in ("Const", "Constant"):
            per_call.append(op.get_friendly_name())
        if layer in HEAVY_OPS:
            precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
            if precision == "f16" and op.get_input_size():
                # FP16 weights only: the plugin reports the weights' type, but the layer takes and
                # gives f32 (or bf16) activations and computes in that precision.
                precision = op.input(0).get_element_type().get_type_name()
            counts[f"{layer}:{precision}"] += 1
    return {"layers": dict(sorted(counts.items())), "weight_dequantized_per_call": sorted(per_call)}


class OpenVINORunner(Runner):
    def __init__(self, xml: Path, precision: str, threads: int | None, profiling: bool = False):
        self.compiled = compile_model(xml, precision, threads, profiling)
        self.request = self.compiled.create_infer_request()
        first = self.compiled.input(0).get_partial_shape()[0]
        self.max_batch = first.get_length() if first.is_static else None  # a fixed-batch export

    def _call(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        return self.request.get_output_tensor(0).data.copy()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.max_batch is None:
            return self._call(batch)
        return np.concatenate([run_fixed(self._call, c, self.max_batch) for c in self.chunks(batch)])

    def close(self) -> None:
        self.request = self.compiled = None


class OpenVINOTarget(Target):
    name = "openvino"
    precisions = ("fp32", "bf16", "fp16", "int8")
    runtime = "openvino"
    install = "pip install 'wae-deploy[openvino]'"
    accuracy_control = True
    cpu = True

    def available(self) -> tuple[bool, str]:
        v = _version()
        return (True, v) if v else (False, f"openvino is not installed ({self.install})")

    def build(self, onnx_path: Path, precision: str, calib: ImageSet | None, out: Path,
              keep_float: tuple[str, ...] = (), meta: dict | None = None,
              accuracy_control: tuple[ImageSet, float] | None = None, overflow_fix: bool = False) -> Artifact:
        import openvino as ov

        if precision == "bf16" and not (cpu_has("avx512_bf16") or cpu_has("amx_bf16")):
            raise UserError("bf16 needs a CPU with AVX512-BF16 or AMX; this one has neither")
        t0 = time.perf_counter()
        info = onnx_meta.read(onnx_path)
        model = ov.convert_model(str(onnx_path))
        control = False
        if precision == "int8":
            from ..quantize import quantize, quantize_to_bound

            if accuracy_control:
                model, control = quantize_to_bound(model, calib, info.preprocessing, *accuracy_control, keep_float,
                                                   overflow_fix=overflow_fix)
            else:
                model = quantize(model, calib, info.preprocessing, keep_float, overflow_fix=overflow_fix)
        with atomic.atomic_dir(out) as tmp:
            ov.save_model(model, str(tmp / XML), compress_to_fp16=precision == "fp16")
            manifest = artifact.new_manifest(
                onnx_path, info, self.name, precision, _version(), **(meta or {}),
                executed=executed_precisions(compile_model(tmp / XML, precision, 1)), keep_float=list(keep_float),
                accuracy_control=control, build_seconds=round(time.perf_counter() - t0, 2),
                details={"compute_precision": COMPUTE[precision]},
                note="FP16 weights; this CPU computes in f32" if precision == "fp16" else None)
            return artifact.write(tmp, out, manifest)

    def load(self, path: Path, threads: int | None = None) -> Runner:
        if _version() is None:
            raise UserError(self.available()[1])
        art = artifact.open(path, self.name, _version())
        art.file(XML.replace(".xml", ".bin"))  # the weights: OpenVINO's own error would not name the folder
        return OpenVINORunner(art.file(XML), art.precision, threads)
