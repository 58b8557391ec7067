"""`wae-deploy export`: the inference graph only, verified against PyTorch, self-describing, repeatable.

Two tiny real checkpoints (a WAE-ResNet20 and its plain ResNet20 baseline, three training
batches each) are trained once per module and exported like a user would export theirs.
The bad-input catalogue (missing files, pickled code, bad opsets...) lives in test_hardening.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from wae_deploy import __version__
from wae_deploy.cli import main
from wae_deploy.runtime import onnx_meta
from wae_deploy.runtime.preprocess import CIFAR
from wae_deploy.training import checkpoint
from wae_deploy.training import export as export_mod
from wae_deploy.training.export import MAX_ABS_DIFF, export, graph_hash

ARCHS = {"wae": "wae-resnet20", "plain": "resnet20"}


def _quiet(*_a, **_k):
    pass


def ort_run(path, images: np.ndarray, output: int | None = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: images})
    return outs if output is None else outs[output]


def torch_logits(ckpt_path, images: np.ndarray) -> np.ndarray:
    model = checkpoint.load(ckpt_path).build_model()
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, trained_pair):
    """wae.pt and plain.pt: real checkpoints trained for three batches (this module's copies of the run's)."""
    folder = tmp_path_factory.mktemp("ckpts")
    for key in ("wae", "plain"):
        shutil.copyfile(trained_pair / f"{key}.pt", folder / f"{key}.pt")
    return {key: folder / f"{key}.pt" for key in ("wae", "plain")}


@pytest.fixture(scope="module")
def exports(ckpts, tmp_path_factory):
    """Default exports (dynamic batch, onnxslim, 64 verification images); the WAE one with --parts."""
    folder = tmp_path_factory.mktemp("export-out")
    return {key: export(ckpts[key], folder / f"{key}.onnx", parts=key == "wae", log=_quiet) for key in ARCHS}


@pytest.fixture(scope="module")
def eval_images(cifar_test) -> np.ndarray:
    """200 normalised CIFAR-10 test images, not the ones export verified on (seed 0)."""
    return CIFAR.normalize(cifar_test.sample(200, seed=5).images)


@pytest.mark.parametrize("key", list(ARCHS))
def test_input_images_output_logits_dynamic_batch(exports, key):
    result = exports[key]
    model = onnx.load(str(result.path))
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value"), "batch axis must be symbolic"
    assert [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[1].dim_value == 10
    m = result.manifest
    assert m["batch"] == "dynamic" and m["input"] == {"name": "images", "shape": ["N", 3, 32, 32],
                                                      "dtype": "float32"}
    assert m["output"] == {"name": "logits", "classes": 10}
    assert m["opset"] == 18 and m["simplifier"] == "onnxslim" and m["note"] is None
    # dynamic in fact: one runtime session takes any batch size
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    assert ort_run(result.path, x[:1]).shape == (1, 10)
    assert ort_run(result.path, x).shape == (3, 10)


def test_graph_has_no_decoder_and_module_scoped_names(exports, ckpts):
    wae = checkpoint.load(ckpts["wae"]).build_model()
    # the checkpoint does hold a decoder with transposed convolutions, so their absence means something
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in wae.decoder.modules())
    graph = onnx.load(str(exports["wae"].path)).graph
    ops = {n.op_type for n in graph.node}
    assert "ConvTranspose" not in ops
    names = [n.name for n in graph.node]
    assert not any("decoder" in n for n in names)
    assert not any("decoder" in i.name for i in graph.initializer)
    for scope in ("decomposer.", "main.", "high.", "fusion."):
        assert any(n.startswith(scope) for n in names), f"no node named after the {scope} module"
    assert "decomposer.body.0/Conv" in names
    # A convolution with an eval-mode BatchNorm folded in is named after the convolution's module
    # (its weights), not the BatchNorm's: decomposer.low/high stay inside the "encoder" part
    # instead of turning into norm_low/Conv and norm_high/Conv.
    assert {"decomposer.low/Conv", "decomposer.high/Conv"} <= set(names)
    params = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Conv" and node.input[1] in params:
            assert node.name.split("/")[0] + ".weight" == node.input[1], (node.name, node.input[1])
    assert len(set(names)) == len(names), "node names must be unique"
    # the exporter's per-node metadata (stack traces with local paths) is dropped
    assert not any(n.metadata_props for n in graph.node)
    # and the plain model's graph the same way
    plain = [n.name for n in onnx.load(str(exports["plain"].path)).graph.node]
    assert any(n.startswith("net.") for n in plain)


@pytest.mark.parametrize("key", list(ARCHS))
def test_metadata_round_trip(exports, ckpts, key):
    ckpt = checkpoint.load(ckpts[key])
    info = onnx_meta.read(exports[key].path)
    assert info.arch == ckpt.arch == ARCHS[key]
    assert info.classes == list(ckpt.classes) and len(info.classes) == 10
    assert info.preprocessing == ckpt.preprocessing
    assert info.checkpoint_sha256 == checkpoint.sha256(ckpts[key])
    assert info.version == __version__
    assert info.config["num_classes"] == 10 and info.config["input_size"] == 32
    assert info.config["decomposition"] == ("wae" if key == "wae" else "plain")
    assert info.extra["metrics"] == ckpt.metrics.get("test", {})
    # multiply-adds per 32x32 image, counted at export so that bench needs no torch: ResNet-20 by hand,
    # WAE-ResNet-20 as `wae-deploy flops wae-resnet20` prints it (derivation: tests/test_bench_artifacts.py)
    assert info.extra["macs"] == {"wae": 16_272_256, "plain": 40_813_184}[key]
    assert info.extra["baseline_arch"] == "resnet20"
    # the manifest records the same metadata the file carries
    props = {p.key: p.value for p in onnx.load(str(exports[key].path)).metadata_props}
    assert exports[key].manifest["metadata"] == {k: v for k, v in props.items() if k.startswith(onnx_meta.PREFIX)}


@pytest.mark.parametrize("key", list(ARCHS))
def test_parity_in_manifest_and_ort_matches_torch_on_real_images(exports, ckpts, eval_images, key):
    result = exports[key]
    p = result.manifest["parity"]
    assert p["n"] == 64 and p["max_abs_diff"] <= MAX_ABS_DIFF and p["top1_agreement"] == 1.0
    data = result.path.read_bytes()
    assert result.manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert result.manifest["bytes"] == len(data)
    assert json.loads(result.path.with_suffix(".json").read_text()) == result.manifest
    ref = torch_logits(ckpts[key], eval_images)
    got = ort_run(result.path, eval_images)
    assert got.shape == (200, 10)
    assert np.abs(got - ref).max() <= MAX_ABS_DIFF
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_parts_exports_the_encoder_with_low_and_high(exports, ckpts, eval_images):
    result = exports["wae"]
    enc_path = result.path.with_name("wae.encoder.onnx")
    assert result.manifest["parts"] == ["wae.encoder.onnx"] and enc_path.is_file()
    enc = onnx.load(str(enc_path))
    assert [i.name for i in enc.graph.input] == ["images"]
    assert [o.name for o in enc.graph.output] == ["low", "high"]
    assert onnx_meta.from_model(enc).arch == "wae-resnet20"
    model = checkpoint.load(ckpts["wae"]).build_model()
    x = eval_images[:16]
    with torch.no_grad():
        low_ref, high_ref = (t.numpy() for t in model.decompose(torch.from_numpy(x)))
    low, high = ort_run(enc_path, x, output=None)
    assert low.shape == low_ref.shape == (16, 3, 16, 16)
    assert high.shape == high_ref.shape == (16, model.decomposer.high_channels, 16, 16)
    assert np.abs(low - low_ref).max() <= MAX_ABS_DIFF
    assert np.abs(high - high_ref).max() <= MAX_ABS_DIFF
    assert exports["plain"].manifest["parts"] == []


def test_cli_prints_summary_and_export_repeats_byte_for_byte(exports, ckpts, tmp_path):
    again = tmp_path / "again.onnx"
    res = CliRunner().invoke(main, ["export", str(ckpts["wae"]), "-o", str(again)])
    assert res.exit_code == 0, res.output
    out = res.output
    first = exports["wae"].manifest
    assert f"wrote {again}" in out and "opset 18" in out and "batch dynamic" in out
    assert f"nodes {first['nodes_before']} -> {first['nodes_after']} (onnxslim)" in out
    assert "ONNX Runtime vs PyTorch on 64 real images" in out and "top-1 agreement 100.0%" in out
    assert f"manifest {again.with_suffix('.json')}" in out
    manifest = json.loads(again.with_suffix(".json").read_text())
    # the same checkpoint exported twice: the same bytes, and so the same graph hash
    assert again.read_bytes() == exports["wae"].path.read_bytes()
    assert manifest["sha256"] == first["sha256"]
    assert manifest["graph_sha256"] == first["graph_sha256"] == graph_hash(onnx.load(str(again)))


def test_fixed_batch_without_simplifier(exports, ckpts, tmp_path, eval_images):
    result = export(ckpts["plain"], tmp_path / "b4.onnx", batch=4, simplifier="none", verify=16, log=_quiet)
    model = onnx.load(str(result.path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 3, 32, 32] and not dims[0].dim_param
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 4
    m = result.manifest
    assert m["batch"] == 4 and m["input"]["shape"] == [4, 3, 32, 32]
    assert m["simplifier"] == "none" and m["nodes_before"] == m["nodes_after"] and m["note"] is None
    assert m["parity"]["n"] == 16 and m["parity"]["max_abs_diff"] <= MAX_ABS_DIFF
    x = eval_images[:4]
    assert np.abs(ort_run(result.path, x) - ort_run(exports["plain"].path, x)).max() <= 1e-5
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error type: a fixed batch is fixed
        ort_run(result.path, eval_images[:2])


def test_simplifier_that_breaks_parity_falls_back(ckpts, tmp_path, monkeypatch):
    seen = {}

    def broken_simplify(model, simplifier):
        seen["raw"], seen["simplifier"] = graph_hash(model), simplifier
        bad = onnx.ModelProto()
        bad.CopyFrom(model)
        init = next(i for i in bad.graph.initializer
                    if i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) >= 64)
        arr = numpy_helper.to_array(init) + np.float32(0.5)
        init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
        seen["broken"] = graph_hash(bad)
        return bad

    monkeypatch.setattr(export_mod, "simplify", broken_simplify)
    out = tmp_path / "fallback.onnx"
    res = CliRunner().invoke(main, ["export", str(ckpts["plain"]), "-o", str(out), "--verify", "16"])
    assert res.exit_code == 0, res.output
    assert seen["simplifier"] == "onnxslim" and seen["raw"] != seen["broken"]
    assert "note: onnxslim broke parity" in res.output and "kept the unsimplified graph" in res.output
    m = json.loads(out.with_suffix(".json").read_text())
    assert m["simplifier"] == "none"
    assert "onnxslim broke parity" in m["note"] and "kept the unsimplified graph" in m["note"]
    assert m["parity"]["max_abs_diff"] <= MAX_ABS_DIFF and m["parity"]["top1_agreement"] == 1.0
    written = onnx.load(str(out))
    assert graph_hash(written) == m["graph_sha256"] == seen["raw"]


@pytest.mark.parametrize("key", list(ARCHS))
def test_export_runs_in_openvino_with_torch_top1(exports, ckpts, eval_images, key):
    import openvino as ov

    core = ov.Core()
    # f32 asked for explicitly: this CPU's plugin would otherwise compute in bf16
    compiled = core.compile_model(str(exports[key].path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.concatenate([compiled(eval_images[i:i + 50])[0] for i in range(0, 200, 50)])
    ref = torch_logits(ckpts[key], eval_images)
    assert got.shape == (200, 10)
    assert (got.argmax(1) == ref.argmax(1)).all()
    assert np.abs(got - ref).max() <= MAX_ABS_DIFF
