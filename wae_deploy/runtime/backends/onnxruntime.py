"""ONNX Runtime on the CPU: loads an artifact's model.onnx (FP32, or an INT8 Q/DQ model) and infers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wae_deploy.core.extras import install_command
from wae_deploy.runtime.backends.base import Backend, Runner, run_fixed

MODEL = "model.onnx"


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


class OnnxRuntimeRunner(Runner):
    def __init__(self, path: Path, threads: int | None, profile_prefix: str | None = None):
        import onnxruntime as ort

        opts = session_options(threads)
        if profile_prefix:  # every run's kernels go to a JSON trace, written by session.end_profiling()
            opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input = first.name
        self.max_batch = first.shape[0] if isinstance(first.shape[0], int) else None  # a fixed-batch export

    def _call(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.max_batch is None:
            return self._call(batch)
        return np.concatenate([run_fixed(self._call, c, self.max_batch) for c in self.chunks(batch)])

    def close(self) -> None:
        self.session = None


class OnnxRuntimeBackend(Backend):
    name = "ort"
    precisions = ("fp32", "int8")
    runtime = "onnxruntime"
    install = install_command("onnxruntime")
    cpu = True

    def load(self, path: Path, threads: int | None = None) -> Runner:
        return OnnxRuntimeRunner(self.open(path).file(MODEL), threads)
