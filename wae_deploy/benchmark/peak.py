"""This machine's peak: the fastest of a large matrix product and a large 3x3 convolution, in the
runtime that runs the models.

    gflops = peak_gflops("openvino", "int8", "conv3x3", threads=2)
    entry_gflops / measure_peaks("openvino", ["int8"])["gflops"]["int8"]   # "% peak"

A model's GFLOP/s means little alone: a CPU's FP32, BF16 and INT8 peaks differ by up to 4x,
and a runtime's kernels never reach the datasheet figure. So the reference is the same
runtime, same threads, same precision, doing the best its kernels do. A GEMM alone is not
that: on an AVX2 host without VNNI, OpenVINO's INT8 convolutions ran 1.6-1.8x its INT8 GEMM
("% peak" read 162-182%), so both kernels are measured and the faster one is the peak.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from wae_deploy.core.errors import UserError

RUNTIMES = ("ort", "openvino")
# The precision the CPU computes in for each artifact precision: an OpenVINO FP16 IR only
# stores FP16 weights and computes in f32 on a CPU (see targets/openvino.py).
COMPUTE = {"fp32": "fp32", "fp16": "fp32", "bf16": "bf16", "int8": "int8"}
MATMUL_N = 2048
CONV_CHANNELS, CONV_SIZE = 256, 56   # a VGG16 conv3 layer: 3.7 GFLOP
KERNELS = ("matmul", "conv3x3")


def _int8_form(nodes_in: str, weight_q: np.ndarray, op, out: str = "Y"):
    """Quantize/dequantize nodes around `op` (what NNCF writes; both runtimes fuse them into an integer kernel)."""
    from onnx import helper, numpy_helper

    init = [numpy_helper.from_array(weight_q, "Wq"),
            numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
            numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
            numpy_helper.from_array(np.array(0, np.uint8), "x_zero")]
    nodes = [helper.make_node("QuantizeLinear", [nodes_in, "x_scale", "x_zero"], ["Xq"]),
             helper.make_node("DequantizeLinear", ["Xq", "x_scale", "x_zero"], ["Xd"]),
             helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zero"], ["W"]), op("Xd", "W", out)]
    return init, nodes


def _save(path, nodes, init, x_shape, y_shape) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "peak", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)], initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # readable by older runtimes too
    onnx.save(model, str(path))
    return Path(path)


def _weights(shape, int8: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-127, 128, shape).astype(np.int8) if int8 else rng.standard_normal(shape, dtype=np.float32)


def matmul_onnx(path: str | os.PathLike, n: int = MATMUL_N, int8: bool = False, seed: int = 0) -> Path:
    """Write a one-layer ONNX model Y = X @ W (n x n, W a constant like a layer's weights), in the
    quantize/dequantize form of a quantized model with `int8`."""
    from onnx import helper, numpy_helper

    w = _weights((n, n), int8, seed)
    op = lambda x, wt, y: helper.make_node("MatMul", [x, wt], [y])  # noqa: E731
    init, nodes = _int8_form("X", w, op) if int8 else ([numpy_helper.from_array(w, "W")], [op("X", "W", "Y")])
    return _save(path, nodes, init, [n, n], [n, n])


def conv_onnx(path: str | os.PathLike, channels: int = CONV_CHANNELS, size: int = CONV_SIZE, int8: bool = False,
              seed: int = 0) -> Path:
    """Write a one-layer ONNX model: a 3x3 convolution, `channels` in and out, on one size x size image."""
    from onnx import helper, numpy_helper

    w = _weights((channels, channels, 3, 3), int8, seed)
    op = lambda x, wt, y: helper.make_node("Conv", [x, wt], [y], pads=[1, 1, 1, 1])  # noqa: E731
    init, nodes = _int8_form("X", w, op) if int8 else ([numpy_helper.from_array(w, "W")], [op("X", "W", "Y")])
    shape = [1, channels, size, size]
    return _save(path, nodes, init, shape, shape)


def _physical_cores() -> int:
    from wae_deploy.benchmark.environment import core_counts

    return core_counts()["physical"] or os.cpu_count() or 1


def peak_gflops(runtime: str, precision: str = "fp32", kernel: str = "matmul", n: int = MATMUL_N,
                threads: int | None = None, min_time_s: float = 1.0, min_iters: int = 5) -> float:
    """GFLOP/s of the fastest run of `kernel` in `runtime` at `precision`: an n x n matrix product, or a
    3x3 convolution of n channels at CONV_SIZE (n = CONV_CHANNELS when left at MATMUL_N).

    The fastest run, not the median: a peak is a best case, and a busy machine only ever
    makes a run slower. All physical cores unless `threads` is given; the same session
    settings as the benchmark (ORT without spinning, OpenVINO with an explicit inference
    precision, since its CPU default is bf16 on CPUs that have it).
    """
    from wae_deploy.runtime.latency import measure_interleaved

    if runtime not in RUNTIMES:
        raise UserError(f"no peak for runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    compute = COMPUTE.get(precision)
    if compute is None or (runtime == "ort" and compute == "bf16"):
        raise UserError(f"no peak for {runtime} at {precision!r}")
    threads = threads or _physical_cores()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="wae-peak-") as tmp:
        if kernel == "matmul":
            path = matmul_onnx(Path(tmp) / "k.onnx", n, int8=compute == "int8")
            x, flop = np.abs(rng.standard_normal((n, n), dtype=np.float32)), 2.0 * n**3
        else:
            c = CONV_CHANNELS if n == MATMUL_N else n
            path = conv_onnx(Path(tmp) / "k.onnx", c, int8=compute == "int8")
            x, flop = np.abs(rng.standard_normal((1, c, CONV_SIZE, CONV_SIZE), dtype=np.float32)), \
                2.0 * c * c * 9 * CONV_SIZE**2
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
        stats = measure_interleaved({"kernel": fn}, warmup_iters=2, warmup_s=0.0, min_iters=min_iters,
                                    min_time_s=min_time_s, max_time_s=max(30.0, min_time_s))["kernel"]
    return flop / (stats.min_ms / 1e3) / 1e9


def measure_peaks(runtime: str, precisions, threads: int | None = None, min_time_s: float = 1.0) -> dict:
    """The `peaks[runtime]` object of a results file: per compute precision used, each kernel's GFLOP/s
    ("kernels") and the faster of them ("gflops", what "% peak" divides by). `min_time_s` per kernel: a
    bench timed for less than a second a cell (`--min-time`) spends no more on its peaks, and then
    takes the fastest of 3 runs instead of 5 (one 2048 x 2048 product takes ~0.3 s on one AVX2 core)."""
    computes = sorted({COMPUTE[p] for p in precisions if p in COMPUTE})
    iters = 5 if min_time_s >= 1.0 else 3
    kernels = {c: {k: peak_gflops(runtime, c, k, threads=threads, min_time_s=min_time_s, min_iters=iters)
                   for k in KERNELS} for c in computes}
    return {"matmul_n": MATMUL_N, "conv3x3": {"channels": CONV_CHANNELS, "size": CONV_SIZE}, "min_time_s": min_time_s,
            "kernels": kernels, "gflops": {c: max(k.values()) for c, k in kernels.items()}}


def peak_for(peaks: dict, runtime: str, precision: str) -> float | None:
    """The peak an entry of `runtime` at `precision` is compared with, if it was measured."""
    return peaks.get(runtime, {}).get("gflops", {}).get(COMPUTE.get(precision))
