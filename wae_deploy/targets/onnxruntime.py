"""ONNX Runtime on the CPU: FP32 with full graph optimisation, INT8 as an NNCF Q/DQ model."""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from .. import artifact, atomic, onnx_meta
from ..artifact import Artifact
from ..data import ImageSet
from ..errors import UserError
from .base import Runner, Target

MODEL = "model.onnx"


def _version() -> str | None:
    try:
        return importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return None


def session_options(threads: int | None = None, optimized_path: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    # Idle workers otherwise spin and slow whatever runs next (a second model timed
    # right after ran 40% slower here).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    return opts


def executed_precisions(model_path: Path) -> dict:
    """What ORT really runs: count compute nodes by kind in its own optimised graph.

    A Q/DQ pair around a Conv that ORT fuses becomes QLinearConv (INT8); a Conv left in
    the optimised graph runs in FP32. Counting after optimisation is the only honest answer.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(str(model_path), session_options(1, optimized), providers=["CPUExecutionProvider"])
        ops = Counter(n.op_type for n in onnx.load(optimized).graph.node)
    int8 = {k: v for k, v in ops.items() if k.startswith(("QLinear", "ConvInteger", "MatMulInteger", "QGemm"))
            or k in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul")}
    float_ops = {k: v for k, v in ops.items() if k in ("Conv", "FusedConv", "Gemm", "MatMul", "FusedGemm",
                                                        "NchwcConv", "FusedMatMul")}
    return {"int8_ops": int8, "float_ops": float_ops}


class OnnxRuntimeRunner(Runner):
    def __init__(self, path: Path, threads: int | None):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: batch})[0]

    def close(self) -> None:
        self.session = None


class OnnxRuntimeTarget(Target):
    name = "ort"
    precisions = ("fp32", "int8")
    accuracy_control = True

    def available(self) -> tuple[bool, str]:
        v = _version()
        return (True, v) if v else (False, "onnxruntime is not installed (pip install onnxruntime)")

    def build(self, onnx_path: Path, precision: str, calib: ImageSet | None, out: Path,
              keep_float: tuple[str, ...] = (), meta: dict | None = None,
              accuracy_control: tuple[ImageSet, float] | None = None) -> Artifact:
        import onnx

        t0 = time.perf_counter()
        model = onnx_meta.load_model(onnx_path)
        info = onnx_meta.from_model(model, str(onnx_path))
        control = False
        if precision == "int8":
            from ..quantize import quantize, quantize_to_bound

            name = model.graph.input[0].name
            if accuracy_control:
                model, control = quantize_to_bound(model, calib, info.preprocessing, *accuracy_control, keep_float,
                                                   input_name=name)
            else:
                model = quantize(model, calib, info.preprocessing, keep_float, input_name=name)
            onnx_meta.write(model, info)  # NNCF keeps metadata on most versions; make sure
        with atomic.atomic_dir(out) as tmp:
            onnx.save(model, str(tmp / MODEL))
            manifest = artifact.new_manifest(
                onnx_path, info, self.name, precision, _version(), **(meta or {}),
                executed=executed_precisions(tmp / MODEL), keep_float=list(keep_float),
                accuracy_control=control, build_seconds=round(time.perf_counter() - t0, 2))
            return artifact.write(tmp, out, manifest)

    def load(self, path: Path, threads: int | None = None) -> Runner:
        if _version() is None:
            raise UserError(self.available()[1])
        return OnnxRuntimeRunner(artifact.open(path, self.name, _version()).file(MODEL), threads)
