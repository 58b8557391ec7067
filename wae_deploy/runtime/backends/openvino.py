"""OpenVINO on x86 CPUs: loads an artifact's IR (FP32, BF16, FP16 weights, INT8) and infers.

The CPU plugin defaults to BF16 math on CPUs with AVX512-BF16 or AMX, so FP32 must ask
for f32 explicitly. An FP16 IR only stores FP16 weights: a CPU decompresses them and
computes in f32 (as run here), which is why its speed is that of FP32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wae_deploy.core.extras import install_command
from wae_deploy.runtime.backends.base import Backend, Runner, run_fixed

XML = "model.xml"
# Precision the CPU plugin computes the float parts in, per artifact precision.
COMPUTE = {"fp32": "f32", "fp16": "f32", "bf16": "bf16", "int8": "f32"}


def compile_model(path_or_model, precision: str, threads: int | None = None, profiling: bool = False):
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": COMPUTE[precision], "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads or os.cpu_count() or 1)}
    if profiling:  # per-layer counters, read with InferRequest.get_profiling_info()
        config["PERF_COUNT"] = True
    core = ov.Core()
    model = core.read_model(str(path_or_model)) if isinstance(path_or_model, (str, Path)) else path_or_model
    return core.compile_model(model, "CPU", config)


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


class OpenVINOBackend(Backend):
    name = "openvino"
    precisions = ("fp32", "bf16", "fp16", "int8")
    runtime = "openvino"
    install = install_command("openvino")
    cpu = True

    def load(self, path: Path, threads: int | None = None) -> Runner:
        art = self.open(path)
        art.file(XML.replace(".xml", ".bin"))  # the weights: OpenVINO's own error would not name the folder
        return OpenVINORunner(art.file(XML), art.precision, threads)
