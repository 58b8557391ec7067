"""The peak every entry's efficiency is measured against: the right precision, a valid model."""

import math

import numpy as np
import pytest

from wae_deploy.benchmark import peak as peak_module
from wae_deploy.benchmark.peak import COMPUTE, conv_onnx, matmul_onnx, peak_for, peak_gflops
from wae_deploy.core.errors import UserError


@pytest.mark.parametrize("int8", [False, True])
def test_matmul_model_computes_x_times_w(tmp_path, int8):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    path = matmul_onnx(tmp_path / "m.onnx", n=16, int8=int8)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w = init["Wq"].astype(np.float32) * init["w_scale"] if int8 else init["W"]
    x = np.random.default_rng(0).uniform(0, 5, (16, 16)).astype(np.float32)
    if int8:  # the activations go through the same 8-bit grid a quantized model uses
        x = np.round(x / init["x_scale"]) * init["x_scale"]
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    np.testing.assert_allclose(y, x @ w, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("int8", [False, True])
def test_conv_model_computes_a_3x3_convolution(tmp_path, int8):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    path = conv_onnx(tmp_path / "c.onnx", channels=4, size=5, int8=int8)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w = init["Wq"].astype(np.float32) * init["w_scale"] if int8 else init["W"]
    x = np.random.default_rng(0).uniform(0, 5, (1, 4, 5, 5)).astype(np.float32)
    if int8:
        x = np.round(x / init["x_scale"]) * init["x_scale"]
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros_like(x)
    for i in range(5):
        for j in range(5):
            expected[0, :, i, j] = np.einsum("oikl,ikl->o", w, padded[0, :, i:i + 3, j:j + 3])
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kernel", ["matmul", "conv3x3"])
@pytest.mark.parametrize("runtime, precision", [("ort", "fp32"), ("ort", "int8"), ("openvino", "fp32"),
                                                ("openvino", "bf16"), ("openvino", "int8")])
def test_peak_runs(runtime, precision, kernel):
    pytest.importorskip("onnxruntime" if runtime == "ort" else "openvino")
    g = peak_gflops(runtime, precision, kernel, n=32, threads=1, min_time_s=0, min_iters=2)
    assert math.isfinite(g) and g > 0


def test_the_peak_is_the_faster_kernel(monkeypatch):
    speed = {("fp32", "matmul"): 100.0, ("fp32", "conv3x3"): 80.0, ("int8", "matmul"): 90.0, ("int8", "conv3x3"): 160.0}
    asked = []

    def fake(rt, c, k, threads=None, min_time_s=1.0, min_iters=5):
        asked.append((min_time_s, min_iters))
        return speed[c, k]

    monkeypatch.setattr(peak_module, "peak_gflops", fake)
    peaks = peak_module.measure_peaks("openvino", ["fp32", "fp16", "int8"])
    assert peaks["gflops"] == {"fp32": 100.0, "int8": 160.0}
    assert peaks["kernels"]["int8"] == {"matmul": 90.0, "conv3x3": 160.0}
    assert set(asked) == {(1.0, 5)} and peaks["min_time_s"] == 1.0
    asked.clear()
    assert peak_module.measure_peaks("openvino", ["fp32"], min_time_s=0.2)["min_time_s"] == 0.2
    assert set(asked) == {(0.2, 3)}  # a short bench's peaks: as short, the fastest of 3 runs


@pytest.mark.parametrize("runtime, precision", [("trt", "fp32"), ("ort", "bf16"), ("ort", "int4")])
def test_peak_refuses_what_it_cannot_measure(runtime, precision):
    with pytest.raises(UserError, match="no peak"):
        peak_gflops(runtime, precision, n=16)


def test_each_precision_meets_the_peak_it_computes_in():
    peaks = {"openvino": {"matmul_n": 2048, "gflops": {"fp32": 200.0, "bf16": 400.0, "int8": 800.0}}}
    assert [peak_for(peaks, "openvino", p) for p in ("fp32", "fp16", "bf16", "int8")] == [200.0, 200.0, 400.0, 800.0]
    assert peak_for(peaks, "ort", "fp32") is None and peak_for(peaks, "openvino", "int4") is None
    assert set(COMPUTE.values()) == {"fp32", "bf16", "int8"}
