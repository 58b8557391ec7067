"""OpenVINO builder: FP32, BF16, FP16 weights and INT8 (NNCF) IRs, and what the CPU plugin runs them in
(runtime.backends.openvino loads what it writes)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from wae_deploy.convert.targets.base import Target
from wae_deploy.core import atomic
from wae_deploy.core.errors import UserError
from wae_deploy.runtime import artifact, onnx_meta
from wae_deploy.runtime.artifact import Artifact
from wae_deploy.runtime.backends.openvino import COMPUTE, XML, OpenVINOBackend, compile_model
from wae_deploy.runtime.data import ImageSet
from wae_deploy.runtime.machine import cpu_has

HEAVY_OPS = ("Convolution", "FullyConnected", "MatMul", "GroupConvolution", "Deconvolution")


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


class OpenVINOTarget(OpenVINOBackend, Target):
    accuracy_control = True

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
            from wae_deploy.convert.quantize import quantize, quantize_to_bound

            if accuracy_control:
                model, control = quantize_to_bound(model, calib, info.preprocessing, *accuracy_control, keep_float,
                                                   overflow_fix=overflow_fix)
            else:
                model = quantize(model, calib, info.preprocessing, keep_float, overflow_fix=overflow_fix)
        with atomic.atomic_dir(out) as tmp:
            ov.save_model(model, str(tmp / XML), compress_to_fp16=precision == "fp16")
            manifest = artifact.new_manifest(
                onnx_path, info, self.name, precision, self.version(), **(meta or {}),
                executed=executed_precisions(compile_model(tmp / XML, precision, 1)), keep_float=list(keep_float),
                accuracy_control=control, build_seconds=round(time.perf_counter() - t0, 2),
                details={"compute_precision": COMPUTE[precision]},
                note="FP16 weights; this CPU computes in f32" if precision == "fp16" else None)
            return artifact.write(tmp, out, manifest)
