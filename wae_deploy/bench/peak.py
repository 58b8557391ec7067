"""This machine's peak, measured as a large matrix product in the runtime that runs the models.

    gflops = matmul_peak_gflops("openvino", "int8", threads=2)
    entry_gflops / gflops      # how close a model runs to the best case of its kernels

A model's GFLOP/s means little alone: a CPU's FP32, BF16 and INT8 peaks differ by up to 4x,
and a runtime's kernels never reach the datasheet figure. So the reference is the same
runtime, same threads, same precision, doing the thing its kernels do best (a 2048 x 2048
GEMM). The runtimes' convolution kernels can beat their own GEMM: on the project's Zen 4
machine large convolutions reached up to 1.2x it, so a ratio a little above 1 is real; far
above 1 means the peak run met a busy machine.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError

RUNTIMES = ("ort", "openvino")
# The precision the CPU computes in for each artifact precision: an OpenVINO FP16 IR only
# stores FP16 weights and computes in f32 on a CPU (see targets/openvino.py).
COMPUTE = {"fp32": "fp32", "fp16": "fp32", "bf16": "bf16", "int8": "int8"}
MATMUL_N = 2048


def matmul_onnx(path: str | os.PathLike, n: int = MATMUL_N, int8: bool = False, seed: int = 0) -> Path:
    """Write a one-layer ONNX model Y = X @ W (n x n, W a constant like a layer's weights).

    With `int8`, in the quantize/dequantize form a quantized model has (what NNCF writes):
    both runtimes fuse it into an integer GEMM.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    if int8:
        init = [numpy_helper.from_array(rng.integers(-127, 128, (n, n)).astype(np.int8), "Wq"),
                numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
                numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
                numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
                numpy_helper.from_array(np.array(0, np.uint8), "x_zero")]
        nodes = [helper.make_node("QuantizeLinear", ["X", "x_scale", "x_zero"], ["Xq"]),
                 helper.make_node("DequantizeLinear", ["Xq", "x_scale", "x_zero"], ["Xd"]),
                 helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zero"], ["W"]),
                 helper.make_node("MatMul", ["Xd", "W"], ["Y"])]
    else:
        init = [numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "W")]
        nodes = [helper.make_node("MatMul", ["X", "W"], ["Y"])]
    graph = helper.make_graph(nodes, "matmul_peak",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])], initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # readable by older runtimes too
    onnx.save(model, str(path))
    return Path(path)


def _physical_cores() -> int:
    from .environment import core_counts

    return core_counts()["physical"] or os.cpu_count() or 1


def matmul_peak_gflops(runtime: str, precision: str = "fp32", n: int = MATMUL_N, threads: int | None = None,
                       min_time_s: float = 1.0, min_iters: int = 5) -> float:
    """GFLOP/s (2 n^3 per product) of the fastest n x n product in `runtime` at `precision`.

    The fastest run, not the median: a peak is a best case, and a busy machine only ever
    makes a run slower. All physical cores unless `threads` is given; the same session
    settings as the benchmark (ORT without spinning, OpenVINO with an explicit inference
    precision, since its CPU default is bf16 on CPUs that have it).
    """
    from .latency import measure_interleaved

    if runtime not in RUNTIMES:
        raise UserError(f"no matmul peak for runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    compute = COMPUTE.get(precision)
    if compute is None or (runtime == "ort" and compute == "bf16"):
        raise UserError(f"no matmul peak for {runtime} at {precision!r}")
    threads = threads or _physical_cores()
    x = np.abs(np.random.default_rng(1).standard_normal((n, n), dtype=np.float32))
    with tempfile.TemporaryDirectory(prefix="wae-peak-") as tmp:
        path = matmul_onnx(Path(tmp) / "matmul.onnx", n, int8=compute == "int8")
        if runtime == "ort":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            def fn():
                sess.run(None, {"X": x})
        else:
            import openvino as ov

            core = ov.Core()
            compiled = core.compile_model(core.read_model(str(path)), "CPU", {
                "INFERENCE_PRECISION_HINT": "bf16" if compute == "bf16" else "f32",
                "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
            request = compiled.create_infer_request()
            def fn():
                request.infer({0: x})
        stats = measure_interleaved({"matmul": fn}, warmup_iters=2, warmup_s=0.0, min_iters=min_iters,
                                    min_time_s=min_time_s, max_time_s=max(30.0, min_time_s))["matmul"]
    return 2.0 * n**3 / (stats.min_ms / 1e3) / 1e9


def measure_peaks(runtime: str, precisions, threads: int | None = None) -> dict:
    """The `peaks[runtime]` object of a results file: GFLOP/s per compute precision used."""
    computes = sorted({COMPUTE[p] for p in precisions if p in COMPUTE})
    return {"matmul_n": MATMUL_N, "gflops": {c: matmul_peak_gflops(runtime, c, threads=threads) for c in computes}}


def peak_for(peaks: dict, runtime: str, precision: str) -> float | None:
    """The peak an entry of `runtime` at `precision` is compared with, if it was measured."""
    return peaks.get(runtime, {}).get("gflops", {}).get(COMPUTE.get(precision))
