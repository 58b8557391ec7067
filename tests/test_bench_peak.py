"""The peak every entry's efficiency is measured against: the right precision, a valid model."""

import math

import numpy as np
import pytest

from wae_deploy.bench.peak import COMPUTE, matmul_onnx, matmul_peak_gflops, peak_for
from wae_deploy.errors import UserError


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


@pytest.mark.parametrize("runtime, precision", [("ort", "fp32"), ("ort", "int8"), ("openvino", "fp32"),
                                                ("openvino", "bf16"), ("openvino", "int8")])
def test_matmul_peak_runs(runtime, precision):
    pytest.importorskip("onnxruntime" if runtime == "ort" else "openvino")
    g = matmul_peak_gflops(runtime, precision, n=128, threads=1, min_time_s=0, min_iters=2)
    assert math.isfinite(g) and g > 0


@pytest.mark.parametrize("runtime, precision", [("trt", "fp32"), ("ort", "bf16"), ("ort", "int4")])
def test_matmul_peak_refuses_what_it_cannot_measure(runtime, precision):
    with pytest.raises(UserError, match="no matmul peak"):
        matmul_peak_gflops(runtime, precision, n=16)


def test_each_precision_meets_the_peak_it_computes_in():
    peaks = {"openvino": {"matmul_n": 2048, "gflops": {"fp32": 200.0, "bf16": 400.0, "int8": 800.0}}}
    assert [peak_for(peaks, "openvino", p) for p in ("fp32", "fp16", "bf16", "int8")] == [200.0, 200.0, 400.0, 800.0]
    assert peak_for(peaks, "ort", "fp32") is None and peak_for(peaks, "openvino", "int4") is None
    assert set(COMPUTE.values()) == {"fp32", "bf16", "int8"}
