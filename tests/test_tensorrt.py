"""TensorRT target: everything that needs no GPU runs here; engine build/inference tests skip without TensorRT."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import described
from onnx import TensorProto, helper, numpy_helper

from wae_deploy.convert.targets import get_target
from wae_deploy.convert.targets.tensorrt import TensorRTTarget, onnx_passes
from wae_deploy.convert.targets.tensorrt.engine import profile_shapes
from wae_deploy.convert.targets.tensorrt.onnx_passes import check_qdq_for_tensorrt, onnx_input_hw, signed_qdq, to_fp16
from wae_deploy.core import atomic
from wae_deploy.core.errors import UserError
from wae_deploy.runtime.backends.tensorrt import ENGINE
from wae_deploy.runtime.backends.tensorrt.cache import (
    EngineCache,
    check_engine_identity,
    engine_cache_key,
    read_engine,
    write_engine,
)
from wae_deploy.runtime.backends.tensorrt.runner import TensorRTRunner
from wae_deploy.runtime.onnx_meta import INPUT

NO_TRT = "tensorrt not installed (no NVIDIA GPU on this machine)"
FP32_SHAPES = profile_shapes((32, 32))


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x})[0]


# ---------------------------------------------------------------- import and availability

@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)      # import tensorrt -> ImportError


@pytest.fixture
def fake_runtime(monkeypatch):
    """Stand-ins for `tensorrt` and `pycuda.driver` that answer the identity questions only."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    driver = types.ModuleType("pycuda.driver")

    class Device:
        gpus = [("Orin", (8, 7))]

        def __init__(self, i):
            self.i = i

        @classmethod
        def count(cls):
            return len(cls.gpus)

        def name(self):
            return self.gpus[self.i][0]

        def compute_capability(self):
            return self.gpus[self.i][1]

        def get_attribute(self, attribute):
            assert attribute == "MULTIPROCESSOR_COUNT"
            return 16

    driver.init = lambda: None
    driver.device_attribute = types.SimpleNamespace(MULTIPROCESSOR_COUNT="MULTIPROCESSOR_COUNT")
    driver.Device = Device
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver
    for name, mod in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", driver)):
        monkeypatch.setitem(sys.modules, name, mod)
    return trt, driver


def test_module_imports_and_registers_without_tensorrt(no_tensorrt):
    target = get_target("tensorrt")
    assert isinstance(target, TensorRTTarget)
    assert (target.name, target.precisions) == ("trt", ("fp32", "fp16", "int8"))


def test_available_says_why_not_without_tensorrt(no_tensorrt):
    ok, reason = TensorRTTarget().available()
    assert not ok
    assert "tensorrt is not installed" in reason and "pip install 'wae-deploy[trt]'" in reason


def test_available_on_this_machine_is_false_with_a_reason():
    ok, reason = TensorRTTarget().available()
    if ok:
        pytest.skip(f"this machine has TensorRT: {reason}")
    assert reason and "\n" not in reason


def test_available_without_pycuda(fake_runtime, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    ok, reason = TensorRTTarget().available()
    assert not ok and "pycuda" in reason and "wae-deploy[trt]" in reason


def test_available_without_gpu(fake_runtime, monkeypatch):
    _, driver = fake_runtime
    monkeypatch.setattr(driver.Device, "gpus", [])
    assert TensorRTTarget().available() == (False, "no CUDA GPU 0 found")

    def broken_init():
        raise RuntimeError("cuInit failed: no CUDA-capable device is detected")

    monkeypatch.setattr(driver, "init", broken_init)
    ok, reason = TensorRTTarget().available()
    assert not ok and reason.startswith("no CUDA GPU found") and "cuInit" in reason


def test_available_with_gpu(fake_runtime):
    assert TensorRTTarget().available() == (True, "TensorRT 10.3.0 on Orin (sm 8.7, 16 SMs)")


def test_build_and_load_without_tensorrt_raise_user_error(no_tensorrt, tmp_path):
    target = TensorRTTarget()
    with pytest.raises(UserError, match=r"wae-deploy\[trt\]"):
        target.build(tmp_path / "m.onnx", "fp32", None, tmp_path / "m.plan")
    with pytest.raises(UserError, match=r"wae-deploy\[trt\]"):
        target.load(tmp_path / "m.plan")


# ---------------------------------------------------------------- cache keys and profile shapes

KEY_ARGS = dict(onnx_bytes_sha256="ab" * 32, trt_version="10.3.0", gpu_name="Orin", compute_capability=(8, 7),
                precision="fp16", profile_shapes=[FP32_SHAPES], sm_count=16,
                build_options={"typing": "strong", "tf32": True, "workspace_mb": None})


def test_cache_key_is_stable():
    key = engine_cache_key(**KEY_ARGS)
    assert key == engine_cache_key(**KEY_ARGS)
    # the same key across runs and machines: a changed recipe must be a deliberate change
    assert key == "641915ef089663031c59688b3eb4a8e1"   # since profiles became a list (one per timed batch)
    # equivalent spellings give the same key
    same = dict(KEY_ARGS, compute_capability="8.7",
                profile_shapes=[{"images": [list(s) for s in FP32_SHAPES["images"]]}])
    assert engine_cache_key(**same) == key


@pytest.mark.parametrize("field,value", [
    ("onnx_bytes_sha256", "cd" * 32), ("trt_version", "10.3.1"), ("gpu_name", "NVIDIA H100"),
    ("compute_capability", (9, 0)), ("precision", "int8"), ("profile_shapes", [profile_shapes((32, 32), 1, 8, 64)]),
    ("profile_shapes", [profile_shapes((32, 32), 1, 1, 32), FP32_SHAPES]),
    ("sm_count", 8), ("build_options", {"typing": "strong", "tf32": False, "workspace_mb": None}),
    ("build_options", {"typing": "strong", "tf32": True, "workspace_mb": 512}),
])
def test_cache_key_changes_with_each_field(field, value):
    assert engine_cache_key(**dict(KEY_ARGS, **{field: value})) != engine_cache_key(**KEY_ARGS)


def test_profile_shapes():
    assert profile_shapes((224, 224)) == {"images": ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))}
    assert profile_shapes((32, 16), 2, 4, 4)["images"] == ((2, 3, 32, 16), (4, 3, 32, 16), (4, 3, 32, 16))
    for bad in [(0, 8, 32), (1, 64, 32), (8, 1, 32)]:
        with pytest.raises(UserError, match="min <= opt <= max"):
            profile_shapes((32, 32), *bad)
    with pytest.raises(UserError):
        TensorRTTarget(min_batch=4, opt_batch=2)


def test_input_hw_from_onnx(tiny_onnx):
    assert onnx_input_hw(onnx.load(tiny_onnx)) == (16, 16)


def _io_model(name="images", shape=("N", 3, 8, 8)):
    graph = helper.make_graph([helper.make_node("Relu", [name], ["logits"])], "g",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(shape))])
    return helper.make_model(graph)


def test_input_hw_rejects_what_a_profile_cannot_cover():
    with pytest.raises(UserError, match="no input 'images'"):
        onnx_input_hw(_io_model(name="input"))
    with pytest.raises(UserError, match="fixed batch of 1"):
        onnx_input_hw(_io_model(shape=(1, 3, 8, 8)))
    with pytest.raises(UserError, match="N x 3 x H x W"):
        onnx_input_hw(_io_model(shape=("N", 3, "H", "W")))


# ---------------------------------------------------------------- Q/DQ checks

W = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)


def qdq_model(act_scale=np.float32(0.05), act_zp=np.int8(0), act_axis=None, w_scale=np.full(4, 0.01, np.float32),
              w_zp=np.zeros(4, np.int8), w_axis=0, prequantized=False, extra_nodes=(), extra_outputs=()):
    """images -> Q/DQ -> Conv(weights through Q/DQ, or pre-quantized int8 weights through DQ) -> logits."""
    act_in = ["images", "a_s"] + ([] if act_zp is None else ["a_zp"])
    act_attrs = {} if act_axis is None else {"axis": act_axis}
    inits = [numpy_helper.from_array(np.asarray(act_scale), "a_s"),
             numpy_helper.from_array(np.asarray(w_scale), "w_s"), numpy_helper.from_array(np.asarray(w_zp), "w_zp")]
    if act_zp is not None:
        inits.append(numpy_helper.from_array(np.asarray(act_zp), "a_zp"))
    nodes = [helper.make_node("QuantizeLinear", act_in, ["x_q"], name="q_act", **act_attrs),
             helper.make_node("DequantizeLinear", ["x_q", *act_in[1:]], ["x_dq"], name="dq_act", **act_attrs)]
    if prequantized:
        q = np.clip(np.round(W / np.asarray(w_scale).reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
        inits.append(numpy_helper.from_array(q, "w_q"))
    else:
        inits.append(numpy_helper.from_array(W, "w"))
        nodes.append(helper.make_node("QuantizeLinear", ["w", "w_s", "w_zp"], ["w_q"], name="q_w", axis=w_axis))
    nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w_dq"], name="dq_w", axis=w_axis))
    nodes.append(helper.make_node("Conv", ["x_dq", "w_dq"], ["logits"], name="conv", pads=[1, 1, 1, 1]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4, 8, 8]), *extra_outputs]
    graph = helper.make_graph(nodes + list(extra_nodes), "qdq",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("prequantized", [False, True])
def test_per_tensor_conv_weights_pass(prequantized):
    """TensorRT takes per-tensor Conv weight quantizers (QAT exports), not only per-channel ones."""
    assert check_qdq_for_tensorrt(qdq_model(w_scale=np.float32(0.01), w_zp=np.int8(0),
                                              prequantized=prequantized)) == []


@pytest.mark.parametrize("prequantized", [False, True])
def test_symmetric_per_channel_model_passes(prequantized):
    model = qdq_model(prequantized=prequantized)
    onnx.checker.check_model(model, full_check=True)
    assert check_qdq_for_tensorrt(model) == []
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert run_ort(model, x).shape == (2, 4, 8, 8)       # a graph ONNX Runtime runs, not just one that parses


@pytest.mark.parametrize("kwargs,expected", [
    (dict(act_zp=np.int8(3)), "asymmetric"),
    (dict(act_zp=np.uint8(0)), "uint8"),
    (dict(act_zp=np.uint8(128)), "asymmetric"),
    (dict(act_zp=None), "uint8"),                                             # no zero point: uint8 by default
    (dict(w_scale=np.full(3, 0.01, np.float32), w_zp=np.zeros(3, np.int8), w_axis=1), "axis 1"),
    (dict(w_scale=np.full(2, 0.01, np.float32), w_zp=np.zeros(2, np.int8)), "2 scales for 4 output channels"),
    (dict(act_scale=np.float32(-0.05)), "positive and finite"),
    (dict(act_scale=np.float32(0.0)), "positive and finite"),
    (dict(w_scale=np.array([0.01, np.inf, 0.01, 0.01], np.float32)), "positive and finite"),
    (dict(act_scale=np.full(3, 0.05, np.float32), act_zp=np.zeros(3, np.int8), act_axis=1), "per-channel activation"),
])
def test_bad_qdq_models_are_reported(kwargs, expected):
    problems = check_qdq_for_tensorrt(qdq_model(**kwargs))
    assert any(expected in p for p in problems), problems


def test_quantize_without_dequantize_is_reported():
    dangling = helper.make_node("QuantizeLinear", ["logits", "a_s", "a_zp"], ["logits_q"], name="q_out")
    model = qdq_model(extra_nodes=[dangling],
                      extra_outputs=[helper.make_tensor_value_info("logits_q", TensorProto.INT8, None)])
    problems = check_qdq_for_tensorrt(model)
    assert any("q_out" in p and "not followed by a DequantizeLinear" in p for p in problems), problems


def test_signed_qdq_turns_unsigned_symmetric_into_int8():
    model = qdq_model(act_zp=np.uint8(0))
    signed = signed_qdq(model)
    assert check_qdq_for_tensorrt(signed) == []
    inits = {t.name: numpy_helper.to_array(t) for t in signed.graph.initializer}
    assert inits["a_zp"].dtype == np.int8 and inits["a_zp"] == 0
    assert np.isclose(inits["a_s"], 0.05 * 255 / 127)
    assert check_qdq_for_tensorrt(model), "the input model is left alone"
    # asymmetric uint8 cannot be made symmetric by a rescale: still reported
    assert any("asymmetric" in p for p in check_qdq_for_tensorrt(signed_qdq(qdq_model(act_zp=np.uint8(7)))))


@pytest.mark.slow
def test_nncf_model_needs_signed_qdq_then_passes(tiny_onnx):
    nncf = pytest.importorskip("nncf")
    model = onnx.load(tiny_onnx)
    rng = np.random.default_rng(0)
    data = [{"images": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=8)
    # NNCF quantizes ReLU outputs as unsigned int8: TensorRT cannot take that as it is
    assert any("uint8" in p for p in check_qdq_for_tensorrt(quantized))
    signed = signed_qdq(quantized)
    assert check_qdq_for_tensorrt(signed) == []
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    ref, got = run_ort(model, x), run_ort(signed, x)
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


# ---------------------------------------------------------------- FP16 ONNX

def test_fp16_model_is_valid_and_close_to_fp32(tiny_onnx):
    model = onnx.load(tiny_onnx)
    half = to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    io = [v.type.tensor_type.elem_type for v in [*half.graph.input, *half.graph.output]]
    assert io == [TensorProto.FLOAT, TensorProto.FLOAT]               # callers still feed and get float32
    assert {t.data_type for t in half.graph.initializer if t.data_type in (1, 10)} == {TensorProto.FLOAT16}
    assert onnx_input_hw(half) == (16, 16)
    assert model.graph.initializer[0].data_type == TensorProto.FLOAT, "the input model is left alone"
    rng = np.random.default_rng(0)
    for n in (1, 5):
        x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
        ref, got = run_ort(model, x), run_ort(half, x)
        assert got.dtype == np.float32 and got.shape == (n, 10)
        np.testing.assert_allclose(got, ref, atol=1e-2, rtol=0)


def test_fp16_handles_constants_casts_and_float_only_inputs():
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Mul", ["images", "half"], ["m"]),
        helper.make_node("Shape", ["m"], ["s"]), helper.make_node("Cast", ["s"], ["s_float"], to=f),
        helper.make_node("ReduceMax", ["s_float"], ["big"], keepdims=0), helper.make_node("Div", ["m", "big"], ["d"]),
        helper.make_node("Resize", ["d", "", "scales"], ["r"], mode="linear"),   # scales must stay float32
        helper.make_node("Relu", ["r"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", f, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", f, ["N", 3, 8, 8])],
                              [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    half = to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    assert next(t for t in half.graph.initializer if t.name == "scales").data_type == f
    x = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(run_ort(half, x), run_ort(model, x), atol=1e-2, rtol=0)


def test_fp16_clips_instead_of_overflowing():
    t = onnx_passes._half(numpy_helper.from_array(np.array([1e6, -1e6, 1.5], np.float32), "w"))
    assert numpy_helper.to_array(t).tolist() == [65504.0, -65504.0, 1.5]


# ---------------------------------------------------------------- engine cache and sidecars

META = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7", "sm_count": 16, "precision": "fp16"}


def test_engine_cache_roundtrip_and_key_check(tmp_path):
    cache = EngineCache(tmp_path)
    assert cache.get("k1") is None
    cache.put("k1", b"PLAN-1", META)
    assert cache.get("k1") == b"PLAN-1"
    assert json.loads((tmp_path / "k1.plan.json").read_text())["key"] == "k1"
    # an engine filed under another key's name is never handed out
    (tmp_path / "k2.plan").write_bytes(b"PLAN-1")
    (tmp_path / "k2.plan.json").write_text((tmp_path / "k1.plan.json").read_text())
    assert cache.get("k2") is None


def test_stale_or_unstamped_engines_are_not_loaded(tmp_path):
    cache = EngineCache(tmp_path)
    cache.put("k", b"PLAN", META)
    (tmp_path / "k.plan").write_bytes(b"OTHER PLAN")          # engine replaced, sidecar not
    assert cache.get("k") is None
    with pytest.raises(UserError, match="does not match its sidecar"):
        read_engine(tmp_path / "k.plan")
    (tmp_path / "k.plan.json").unlink()
    assert cache.get("k") is None
    with pytest.raises(UserError, match="no readable sidecar"):
        read_engine(tmp_path / "k.plan")


def test_sidecar_is_written_after_the_engine(tmp_path, monkeypatch):
    order = []
    real_write = atomic.write_bytes                     # write_text goes through write_bytes too
    monkeypatch.setattr(atomic, "write_bytes", lambda p, d: (order.append(p.name), real_write(p, d)))
    write_engine(tmp_path / "m.plan", b"PLAN", META)
    assert order == ["m.plan", "m.plan.json"]

    # a crash between the two leaves an engine without a sidecar: not loaded
    def crash_on_sidecar(p, d):
        if p.name.endswith(".json"):
            raise KeyboardInterrupt
        real_write(p, d)

    monkeypatch.setattr(atomic, "write_bytes", crash_on_sidecar)
    with pytest.raises(KeyboardInterrupt):
        write_engine(tmp_path / "m.plan", b"NEW PLAN", META)
    assert (tmp_path / "m.plan").read_bytes() == b"NEW PLAN" and not (tmp_path / "m.plan.json").exists()
    with pytest.raises(UserError):
        read_engine(tmp_path / "m.plan")


def test_timing_cache_is_per_tensorrt_version_and_gpu(tmp_path):
    cache = EngineCache(tmp_path)
    a = cache.timing_cache_path("10.3.0", "NVIDIA Jetson AGX Orin", (8, 7), 16)
    assert a.parent == tmp_path and a.name == "timing-10.3.0-NVIDIA-Jetson-AGX-Orin-sm8.7-16sms.cache"
    assert a != cache.timing_cache_path("10.4.0", "NVIDIA Jetson AGX Orin", (8, 7), 16)
    assert a != cache.timing_cache_path("10.3.0", "NVIDIA H100", (9, 0), 132)
    assert a != cache.timing_cache_path("10.3.0", "NVIDIA Jetson AGX Orin", (8, 7), 8)


def test_default_cache_dir_is_under_the_project_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("WAE_CACHE", str(tmp_path))
    assert EngineCache().root == tmp_path / "trt"


def test_engine_from_another_tensorrt_or_gpu_is_refused():
    check_engine_identity(META, "10.3.0", "Orin", (8, 7), 16)
    with pytest.raises(UserError, match="TensorRT 10.3.0 for Orin.*TensorRT 11.0.0 on Orin"):
        check_engine_identity(META, "11.0.0", "Orin", (8, 7), 16)
    with pytest.raises(UserError, match="not portable"):
        check_engine_identity(META, "10.3.0", "NVIDIA H100", (9, 0), 132)
    # all Orin modules share a name and compute capability; the SM count tells them apart
    with pytest.raises(UserError, match="16 SMs.*8 SMs"):
        check_engine_identity(META, "10.3.0", "Orin", (8, 7), 8)


def test_load_refuses_a_foreign_engine_before_touching_the_gpu(fake_runtime, tiny_onnx, tmp_path):  # noqa: F811
    from wae_deploy.runtime import artifact, onnx_meta

    def write_manifest(folder, version):
        manifest = artifact.new_manifest(tiny_onnx, onnx_meta.read(tiny_onnx), "trt", "fp32", version)
        artifact.write(folder, folder, manifest)


    other_version = tmp_path / "other-version"
    other_version.mkdir()
    write_engine(other_version / ENGINE, b"PLAN", dict(META, tensorrt="10.7.0"))
    write_manifest(other_version, "10.7.0")
    with pytest.raises(UserError, match="built with trt 10.7.0"):
        TensorRTTarget().load(other_version)
    other_gpu = tmp_path / "other-gpu"
    other_gpu.mkdir()
    write_engine(other_gpu / ENGINE, b"PLAN", dict(META, gpu="Thor"))
    write_manifest(other_gpu, "10.3.0")
    with pytest.raises(UserError, match="built by TensorRT 10.3.0 for Thor"):
        TensorRTTarget().load(other_gpu)
    with pytest.raises(UserError, match="not a wae-deploy artifact"):
        TensorRTTarget().load(tmp_path / "missing")


# ---------------------------------------------------------------- build orchestration (TensorRT faked)

@pytest.fixture
def recorded_builds(fake_runtime, monkeypatch):
    """The real build() with the calls into TensorRT (the build and the layer readback) replaced by a recorder."""
    calls = []

    def fake_build(self, trt, cuda, onnx_bytes, precision, shapes, timing):
        calls.append({"model": onnx.load_from_string(onnx_bytes), "precision": precision,
                      "shapes": shapes, "timing": timing})
        return f"PLAN {precision} #{len(calls)}".encode()

    monkeypatch.setattr(TensorRTTarget, "_build_engine", fake_build)
    monkeypatch.setattr(TensorRTTarget, "_read_executed", lambda self, trt, cuda, plan: {})
    return calls


def test_build_writes_stamped_artifact_and_reuses_cache(recorded_builds, tiny_onnx, tmp_path):
    target = TensorRTTarget(cache_root=tmp_path / "cache")
    art = target.build(tiny_onnx, "fp16", None, tmp_path / "a")
    assert art.target == "trt" and art.precision == "fp16" and art.classes == [str(i) for i in range(10)]
    assert (tmp_path / "a" / ENGINE).read_bytes() == b"PLAN fp16 #1"
    plan, meta = read_engine(tmp_path / "a" / ENGINE)
    identity = (meta["tensorrt"], meta["gpu"], meta["compute_capability"], meta["precision"])
    assert identity == ("10.3.0", "Orin", "8.7", "fp16")
    call = recorded_builds[0]
    assert call["shapes"] == [profile_shapes((16, 16), 1, 8, 32)]
    assert call["timing"].name == "timing-10.3.0-Orin-sm8.7-16sms.cache"
    # one strongly typed path for 10.3 and 11: fp16 goes in as an FP16-typed ONNX
    assert call["model"].graph.initializer[0].data_type == TensorProto.FLOAT16
    # same inputs: served from the cache, no second build
    target.build(tiny_onnx, "fp16", None, tmp_path / "b")
    assert len(recorded_builds) == 1 and (tmp_path / "b" / ENGINE).read_bytes() == plan
    # another precision or profile: another engine
    target.build(tiny_onnx, "fp32", None, tmp_path / "c")
    TensorRTTarget(max_batch=64, cache_root=tmp_path / "cache").build(tiny_onnx, "fp32", None, tmp_path / "d")
    assert len(recorded_builds) == 3


def test_a_corrupted_cache_entry_is_rebuilt(recorded_builds, tiny_onnx, tmp_path):
    target = TensorRTTarget(cache_root=tmp_path / "cache")
    target.build(tiny_onnx, "fp32", None, tmp_path / "a")
    [cached] = (tmp_path / "cache").glob("*.plan")
    cached.write_bytes(b"garbage")
    target.build(tiny_onnx, "fp32", None, tmp_path / "a")
    assert len(recorded_builds) == 2 and read_engine(tmp_path / "a" / ENGINE)[0] == b"PLAN fp32 #2"


def test_int8_needs_a_tensorrt_ready_qdq_model(recorded_builds, tiny_onnx, tmp_path):
    target = TensorRTTarget(cache_root=tmp_path)
    with pytest.raises(UserError, match="no Q/DQ nodes"):
        target.build(tiny_onnx, "int8", None, tmp_path / "a.plan")
    bad = tmp_path / "asym.onnx"
    onnx.save(described(qdq_model(act_zp=np.int8(5))), bad)
    with pytest.raises(UserError, match="cannot run as TensorRT INT8: .*asymmetric"):
        target.build(bad, "int8", None, tmp_path / "a")
    good = tmp_path / "qdq.onnx"
    onnx.save(described(qdq_model(act_zp=np.uint8(0))), good)         # NNCF-style unsigned activations are fixed up
    with pytest.raises(UserError, match="build it with --precision int8"):
        target.build(good, "fp16", None, tmp_path / "a")
    target.build(good, "int8", None, tmp_path / "a")
    assert check_qdq_for_tensorrt(recorded_builds[-1]["model"]) == []
    with pytest.raises(UserError, match="not 'bf16'"):
        target.build(good, "bf16", None, tmp_path / "a")


# ---------------------------------------------------------------- on a machine with TensorRT and a GPU

def _real_target(tmp_path):
    pytest.importorskip("tensorrt", reason=NO_TRT)
    pytest.importorskip("pycuda.driver", reason=NO_TRT)
    target = TensorRTTarget(min_batch=1, opt_batch=4, max_batch=8, cache_root=tmp_path / "cache")
    ok, reason = target.available()
    if not ok:
        pytest.skip(reason)
    return target


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_engine_matches_onnxruntime(tmp_path, tiny_onnx, precision, atol):
    target = _real_target(tmp_path)
    target.build(tiny_onnx, precision, None, tmp_path / f"tiny-{precision}")
    artifact = tmp_path / f"tiny-{precision}"
    x = np.random.default_rng(0).standard_normal((20, 3, 16, 16)).astype(np.float32)
    ref = run_ort(onnx.load(tiny_onnx), x)
    with target.load(artifact) as runner:
        for n in (1, 3, 8, 20):     # 20 > the profile's max of 8: served in chunks
            np.testing.assert_allclose(runner.infer(x[:n]), ref[:n], atol=atol, rtol=0)


def test_int8_engine_from_nncf_model(tmp_path, tiny_onnx):
    target = _real_target(tmp_path)
    nncf = pytest.importorskip("nncf")
    rng = np.random.default_rng(0)
    data = [{"images": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    qdq_path = tmp_path / "tiny-qdq.onnx"
    onnx.save(described(nncf.quantize(onnx.load(tiny_onnx), nncf.Dataset(data), subset_size=8)), qdq_path)
    target.build(qdq_path, "int8", None, tmp_path / "tiny-int8")
    artifact = tmp_path / "tiny-int8"
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    ref = run_ort(signed_qdq(onnx.load(qdq_path)), x)
    with target.load(artifact) as runner:
        got = runner.infer(x)
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max() + 1e-3


def test_second_build_comes_from_the_cache(tmp_path, tiny_onnx, monkeypatch):
    target = _real_target(tmp_path)
    target.build(tiny_onnx, "fp32", None, tmp_path / "a")
    assert list((tmp_path / "cache").glob("timing-*.cache"))
    monkeypatch.setattr(TensorRTTarget, "_build_engine", lambda *a: pytest.fail("rebuilt a cached engine"))
    target.build(tiny_onnx, "fp32", None, tmp_path / "b")
    assert (tmp_path / "a" / ENGINE).read_bytes() == (tmp_path / "b" / ENGINE).read_bytes()


# ---------------------------------------------------------------- runner chunking (engine faked)

class _ProfileContext:
    """An execution context with TensorRT's contract: set_input_shape is False outside the profile
    and execute_async_v3 needs a shape set first; it "computes" row sums so chunks are checkable."""

    def __init__(self, lo, hi, host):
        self.lo, self.hi, self.host, self.n = lo, hi, host, None

    def set_input_shape(self, name, shape):
        self.n = shape[0] if self.lo <= shape[0] <= self.hi else None
        return self.n is not None

    def execute_async_v3(self, stream_handle):
        if self.n is None:
            return False
        x = self.host[INPUT][:self.n]
        self.host["logits"][:self.n] = x.reshape(self.n, -1).sum(1, keepdims=True)
        return True


def _chunking_runner(lo, hi):
    runner = object.__new__(TensorRTRunner)
    host = {INPUT: np.zeros((hi, 3, 2, 2), np.float32), "logits": np.zeros((hi, 1), np.float32)}
    cuda = types.SimpleNamespace(memcpy_htod_async=lambda *a: None, memcpy_dtoh_async=lambda *a: None)
    ctx = types.SimpleNamespace(push=lambda: None, pop=lambda: None)
    runner.__dict__.update(_cuda=cuda, _ctx=ctx, _host=host, _buffers={INPUT: 0, "logits": 0}, _output="logits",
                           _profiles=[(lo, lo, hi)], _profile=0, _item_shape=(3, 2, 2), _stream=types.SimpleNamespace(
                               handle=0, synchronize=lambda: None), _context=_ProfileContext(lo, hi, host))
    return runner


@pytest.mark.parametrize("n", [1, 7, 8, 100])
def test_any_batch_is_served_in_chunks_the_profile_takes(n):
    runner = _chunking_runner(2, 8)
    batch = np.random.default_rng(n).normal(size=(n, 3, 2, 2)).astype(np.float32)
    out = runner.infer(batch)
    np.testing.assert_allclose(out[:, 0], batch.reshape(n, -1).sum(1), rtol=1e-5)


def test_int8_without_nncf_is_one_clean_line(monkeypatch):
    from wae_deploy.convert.quantize import quantize

    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(UserError, match="needs nncf: pip install"):
        quantize(None, None, None)


def test_trt_extra_carries_nncf():
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(req.startswith("nncf") for req in extras["trt"])
