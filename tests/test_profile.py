"""Per-layer profiles read from real ONNX Runtime and OpenVINO runs, and the weight-dequantization checks.

The models are built here with onnx.helper (a few kB, node names as the export writes them:
"decomposer.body.0/Conv", "main.features.0/Conv", "fusion.0/Gemm"), so every test takes well
under a second of runtime work.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import described
from onnx import TensorProto, helper, numpy_helper

from wae_deploy.cli import main
from wae_deploy.convert import qdq
from wae_deploy.convert.targets import get_target
from wae_deploy.convert.targets.onnxruntime import executed_precisions
from wae_deploy.core.errors import UserError
from wae_deploy.runtime.layer_profile import cannot_profile, ort_layers, part_of, profile

RNG = np.random.default_rng(0)


def _w(name, *shape):
    return numpy_helper.from_array(RNG.normal(0, 0.3, shape).astype(np.float32), name)


def part_model(batch="N") -> onnx.ModelProto:
    """images 3x16x16 -> encoder conv -> main conv -> flatten -> main head and fusion Gemm -> their sum (10)."""
    nodes = [
        helper.make_node("Conv", ["images", "decomposer.body.0.weight"], ["e"], name="decomposer.body.0/Conv",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["e"], ["er"], name="decomposer.body.1/Relu"),
        helper.make_node("Conv", ["er", "main.features.0.weight"], ["m"], name="main.features.0/Conv",
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["m"], ["mr"], name="main.features.1/Relu"),
        helper.make_node("Flatten", ["mr"], ["f"], name="main.features.2/Flatten"),
        helper.make_node("Gemm", ["f", "fusion.0.weight", "fusion.0.bias"], ["fz"], name="fusion.0/Gemm",
                         transB=1),
        helper.make_node("Gemm", ["f", "main.head.0.weight"], ["mz"], name="main.head.0/Gemm", transB=1),
        helper.make_node("Add", ["mz", "fz"], ["logits"], name="graph/Add"),   # a WAE's logits: main + fusion
    ]
    inits = [_w("decomposer.body.0.weight", 8, 3, 3, 3), _w("main.features.0.weight", 16, 8, 3, 3),
             _w("fusion.0.weight", 10, 16 * 8 * 8), _w("fusion.0.bias", 10), _w("main.head.0.weight", 10, 16 * 8 * 8)]
    graph = helper.make_graph(nodes, "parts", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                             [batch, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return described(model)


@pytest.fixture(scope="module")
def part_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("prof") / "parts.onnx"
    onnx.save(part_model(), path)
    return path


def test_part_of_names_from_the_export_and_from_runtimes():
    assert part_of("decomposer.low/Conv") == "encoder"
    assert part_of("norm_low/BatchNormalization") == "main"
    assert part_of("high.features.3/Relu") == "high"
    assert part_of("DequantizeLinear_fusion.0.weight_1") == "fusion"
    assert part_of("main.head.0/Gemm") == "main"
    assert part_of("net.features.0/Conv") == "classifier"
    assert part_of("ReorderOutput") == "other"
    # A runtime's name made from a tensor: the longest source name inside it decides.
    known = {"relu_1": "encoder", "relu_12": "main"}
    assert part_of("relu_12_nchwc", known) == "main"
    assert part_of("relu_1_nchwc", known) == "encoder"


def test_ort_trace_keeps_only_the_timed_runs():
    """A hand-written trace: one warm-up run, two timed runs; the warm-up's node events are left out."""
    def node(name, ts, dur, op="Conv", src="float", dst="float"):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op, "provider": "CPUExecutionProvider",
                         "input_type_shape": [{src: [1]}], "output_type_shape": [{dst: [1]}]}}

    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    trace = [run(0, 100), node("a", 10, 500), run(1000, 100), node("a", 1010, 40), node("dq", 1060, 20,
             "DequantizeLinear", "int8", "float"), run(2000, 100), node("a", 2010, 60), node("dq", 2070, 30,
             "DequantizeLinear", "int8", "float")]
    times, meta = ort_layers(trace, runs=2)
    assert times == pytest.approx({"a": 0.1, "dq": 0.05})  # ms summed over the two timed runs
    assert meta["a"] == ("Conv", "Conv/CPU", "fp32")
    assert meta["dq"] == ("DequantizeLinear", "DequantizeLinear/CPU", "int8->fp32")


def _check(prof, runs):
    assert prof.runs == runs and len(prof.layers) >= 3
    assert sum(lay.share for lay in prof.layers) == pytest.approx(1.0)
    assert [lay.ms for lay in prof.layers] == sorted((lay.ms for lay in prof.layers), reverse=True)
    assert prof.kernel_ms > 0 and prof.wall_ms > 0
    if prof.target == "ort":  # ORT's kernels ran inside the traced runs: no more than their wall time
        assert prof.kernel_ms <= prof.wall_ms * 1.05
    # (OpenVINO's counters on a model this small can sum past the wall time: seen on a quiet machine)
    parts = prof.parts()
    assert {"encoder", "main", "fusion"} <= set(parts), parts
    assert sum(parts.values()) == pytest.approx(1.0)
    assert prof.by_precision().get("fp32", 0) > 0.5, prof.by_precision()


def test_ort_profile_of_a_real_run(part_onnx):
    prof = profile(part_onnx, batch=2, runs=4, threads=1)
    assert (prof.target, prof.precision, prof.batch, prof.chunks) == ("ort", "fp32", 2, 1)
    _check(prof, 4)
    gemm = next(lay for lay in prof.layers if lay.part == "fusion")
    assert gemm.op in ("Gemm", "FusedGemm") and gemm.kernel.endswith("/CPU")


def test_openvino_profile_of_a_real_run(part_onnx, tmp_path):
    art = get_target("openvino").build(part_onnx, "fp32", None, tmp_path / "ov")
    prof = profile(art.path, batch=2, runs=4, threads=1)
    assert (prof.target, prof.precision) == ("openvino", "fp32")
    _check(prof, 4)
    conv = next(lay for lay in prof.layers if lay.part == "encoder" and lay.op == "Convolution")
    assert conv.kernel.lower().endswith("f32") and conv.precision == "fp32", conv


def test_a_batch_beyond_a_fixed_batch_model_runs_in_chunks(tmp_path):
    """Exported with batch 2, asked for 5: three calls (2 + 2 + a padded 1), in inference and in the profile."""
    path = tmp_path / "fixed.onnx"
    onnx.save(part_model(batch=2), path)
    art = get_target("ort").build(path, "fp32", None, tmp_path / "fixed.ort-fp32")
    x = RNG.normal(size=(5, 3, 16, 16)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = np.concatenate([sess.run(None, {"images": np.concatenate([x[i:i + 1]] * 2)})[0][:1] for i in range(5)])
    with get_target("ort").load(art.path) as runner:
        assert [len(c) for c in runner.chunks(x)] == [2, 2, 1]
        np.testing.assert_allclose(runner.infer(x), expected, rtol=1e-5, atol=1e-5)
    prof = profile(art.path, batch=5, runs=2, threads=1)
    assert prof.chunks == 3


def test_profile_refuses_what_it_cannot_read(tmp_path):
    assert cannot_profile("ort") is None and cannot_profile("openvino") is None
    assert "trt cannot profile" in cannot_profile("trt")
    with pytest.raises(UserError, match="not an artifact folder"):
        profile(tmp_path / "missing.onnx")


def test_profile_cli_json(part_onnx):
    r = CliRunner().invoke(main, ["profile", str(part_onnx), "--runs", "2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["nodes"] == len(out["layers"]) and out["target"] == "ort"
    r = CliRunner().invoke(main, ["profile", str(part_onnx), "--runs", "0"])
    assert r.exit_code == 2 and "error:" in r.output


# ------------------------------------------------------------------------ weight-only Q/DQ

def weight_only(activation_quantized: bool) -> onnx.ModelProto:
    """x -> Flatten -> Gemm(int8 weight -> DequantizeLinear), the activation quantized or not."""
    w = RNG.integers(-127, 128, (10, 64)).astype(np.int8)
    scale = np.full(10, 0.01, np.float32)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(scale, "w_scale"),
             numpy_helper.from_array(np.zeros(10, np.int8), "w_zero"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "x_zero")]
    nodes = [helper.make_node("Relu", ["images"], ["r"], name="main.features.0/Relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="main.features.1/Flatten"),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"],
                              name="DequantizeLinear_fusion.0.weight_1", axis=0)]
    x = "f"
    if activation_quantized:
        nodes += [helper.make_node("QuantizeLinear", ["f", "x_scale", "x_zero"], ["fq"], name="q"),
                  helper.make_node("DequantizeLinear", ["fq", "x_scale", "x_zero"], ["fdq"], name="dq")]
        x = "fdq"
    # No bias: ORT fuses a float-output QGemm only without one (or with a quantizer after it).
    nodes.append(helper.make_node("Gemm", [x, "w"], ["logits"], name="fusion.0/Gemm", transB=1))
    graph = helper.make_graph(nodes, "wo", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 4, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return described(model)


def _save(model, path):
    onnx.save(model, path)
    return path


def test_manifest_flags_a_weight_dequantized_on_every_call(tmp_path):
    flagged = executed_precisions(_save(weight_only(False), tmp_path / "wo.onnx"))
    assert flagged["weight_dequantized_per_call"] == ["fusion.0/Gemm"]
    assert flagged["float_ops"] == {"Gemm": 1} and flagged["int8_ops"] == {}
    fused = executed_precisions(_save(weight_only(True), tmp_path / "q.onnx"))
    assert fused["weight_dequantized_per_call"] == [] and fused["float_ops"] == {}
    assert sum(fused["int8_ops"].values()) == 1, fused
    # NNCF's model, before ORT: the same layer, found through the Flatten NNCF left unquantized.
    assert qdq.weight_only_layers(weight_only(False)) == {"fusion.0/Gemm": "DequantizeLinear_fusion.0.weight_1"}
    assert qdq.weight_only_layers(weight_only(True)) == {}


def test_folding_keeps_the_numbers_and_removes_the_dequantize(tmp_path):
    model = weight_only(False)
    folded = qdq.fold_weights(model, ["fusion.0/Gemm"])
    assert not any(n.op_type == "DequantizeLinear" for n in folded.graph.node)
    x = RNG.normal(size=(3, 4, 4, 4)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(  # noqa: E731
        None, {"images": x})[0]
    np.testing.assert_allclose(run(folded), run(model), rtol=1e-6, atol=1e-6)
    assert executed_precisions(_save(folded, tmp_path / "f.onnx"))["weight_dequantized_per_call"] == []


def test_quantizing_the_activation_makes_an_int8_layer(tmp_path):
    q = qdq.quantize_activations(weight_only(False), {"fusion.0/Gemm": (0.0, 3.0)})
    ex = executed_precisions(_save(q, tmp_path / "q.onnx"))
    assert ex["weight_dequantized_per_call"] == [] and sum(ex["int8_ops"].values()) == 1, ex
    scale = next(numpy_helper.to_array(t) for t in q.graph.initializer if t.name.endswith("_act_scale"))
    assert scale == pytest.approx(3.0 / 255)   # a non-negative range: uint8 from zero
    assert qdq.quantization_params(-2.0, 1.0)[0] == pytest.approx(2.0 / 127)


def test_bench_profile_on_a_target_that_cannot_says_one_line_and_goes_on():
    from wae_deploy.benchmark.suite import _can_profile

    lines = []
    assert _can_profile("trt", lines.append) is False
    assert len(lines) == 1 and "cannot profile" in lines[0] and "carrying on" in lines[0]
    assert _can_profile("ort", lines.append) is True and len(lines) == 1
