"""The TensorRT target's real build/load/infer paths, run through strict stand-ins of tensorrt 10.3
and 11.x and pycuda (tests/trt_standin.py), plus `bench --target trt` end to end."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from fixtures_small import copy_export, reference_export
from test_tensorrt import run_ort
from trt_standin import TIMING_MAGIC, install

from wae_deploy.cli import main
from wae_deploy.convert.targets.tensorrt import TensorRTTarget
from wae_deploy.core.errors import UserError
from wae_deploy.runtime.backends.tensorrt import ENGINE
from wae_deploy.runtime.metrics import evaluate_runner
from wae_deploy.runtime.onnx_meta import INPUT

VERSIONS = ["10.3.0", "11.1.0"]


@pytest.fixture(params=VERSIONS)
def standin(request, monkeypatch):
    return install(monkeypatch, request.param)


def _images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_build_load_infer_any_batch(standin, tiny_onnx, tmp_path, precision, atol):
    target = TensorRTTarget(cache_root=tmp_path / "cache")
    details = target.build(tiny_onnx, precision, None, tmp_path / "a").manifest["details"]
    assert details["sm_count"] == 16 and details["build_options"]["tf32"] == (precision != "fp32")
    x = _images(100)
    ref = run_ort(onnx.load(tiny_onnx), x)
    with target.load(tmp_path / "a") as runner:
        for n in (1, 8, 100):       # 100 > the profile's max of 32: chunks
            np.testing.assert_allclose(runner.infer(x[:n]), ref[:n], atol=atol, rtol=0)
    assert not standin[2].contexts and not standin[2].blocks     # contexts popped, buffers freed


def test_fp32_engine_is_built_without_tf32(standin, tiny_onnx, tmp_path):
    TensorRTTarget(cache_root=tmp_path).build(tiny_onnx, "fp32", None, tmp_path / "a")
    plan = (tmp_path / "a" / ENGINE).read_bytes()
    assert json.loads(plan[len(b"STANDIN-PLAN"):])["tf32"] is False


def test_11_has_no_weak_precision_flags(monkeypatch):
    trt, _, _ = install(monkeypatch, "11.1.0")
    assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.BuilderFlag, "INT8")
    assert not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    trt10, _, _ = install(monkeypatch, "10.3.0")
    assert hasattr(trt10.BuilderFlag, "FP16") and hasattr(trt10.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


def test_runtime_contract_is_checked(standin, tiny_onnx, tmp_path):
    """set_input_shape is False outside the profile; execution needs every I/O address."""
    target = TensorRTTarget(min_batch=2, opt_batch=2, max_batch=4, cache_root=tmp_path)
    target.build(tiny_onnx, "fp32", None, tmp_path / "a")
    x = _images(5)
    with target.load(tmp_path / "a") as runner:
        # 5 = 4 + a tail of 1, below the min batch of 2: padded, and the padding dropped
        np.testing.assert_allclose(runner.infer(x), run_ort(onnx.load(tiny_onnx), x), atol=1e-4)
        ctx = runner._context
        assert not ctx.set_input_shape(INPUT, (5, 3, 16, 16))
        assert ctx.set_input_shape(INPUT, (2, 3, 16, 16))
        del ctx.addresses["logits"]
        with pytest.raises(RuntimeError, match="execution failed"):
            runner._infer_chunk(x[:2])


def test_int8_from_a_plain_onnx_with_the_trt_extra(standin, tiny_onnx, tmp_path):
    """nncf (in the trt extra) quantizes the plain ONNX; the Q/DQ engine agrees with ORT on the Q/DQ model."""
    from wae_deploy.runtime import onnx_meta
    from wae_deploy.runtime.data import ImageSet
    from wae_deploy.runtime.preprocess import Preprocessing

    model = onnx.load(tiny_onnx)      # a wae-deploy export carries its preprocessing, which NNCF calibrates with
    spec = Preprocessing(resize=16, crop=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    onnx_meta.write(model, onnx_meta.ModelInfo(
        arch="tiny", classes=[str(i) for i in range(10)], preprocessing=spec, config={}, checkpoint_sha256="0" * 64,
        version="0", extra={}))
    exported = tmp_path / "tiny.onnx"
    onnx.save(model, exported)
    calib = ImageSet((np.random.default_rng(1).integers(0, 256, (16, 16, 16, 3))).astype(np.uint8),
                     np.zeros(16, np.int64), [str(i) for i in range(10)])
    target = TensorRTTarget(cache_root=tmp_path)
    target.build(exported, "int8", calib, tmp_path / "a")
    x = _images(12)
    with target.load(tmp_path / "a") as runner:
        got = runner.infer(x)
    ref = run_ort(onnx.load(tiny_onnx), x)
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max() + 1e-2


def test_corrupt_timing_cache_is_ignored_with_a_warning_and_rebuilt(standin, tiny_onnx, tmp_path):
    target = TensorRTTarget(cache_root=tmp_path)
    target.build(tiny_onnx, "fp32", None, tmp_path / "a")
    (timing,) = tmp_path.glob("timing-*.cache")
    timing.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="corrupt TensorRT timing cache"):
        target.build(tiny_onnx, "fp16", None, tmp_path / "b")
    assert timing.read_bytes().startswith(TIMING_MAGIC)


def test_build_runs_on_the_selected_gpu(monkeypatch, tiny_onnx, tmp_path):
    gpus = (("NVIDIA A100", (8, 0), 108), ("NVIDIA H100", (9, 0), 132))
    trt, cuda, memory = install(monkeypatch, "10.3.0", gpus=gpus)
    seen = []
    real = trt.Builder.build_serialized_network

    def spy(self, network, config):
        seen.append(memory.contexts[-1].device.number)
        return real(self, network, config)

    monkeypatch.setattr(trt.Builder, "build_serialized_network", spy)
    details = TensorRTTarget(device=1, cache_root=tmp_path).build(tiny_onnx, "fp32", None, tmp_path / "a").manifest[
        "details"]
    assert seen == [1] and details["gpu"] == "NVIDIA H100" and details["sm_count"] == 132


def test_engine_for_another_sm_count_is_refused_before_the_gpu(monkeypatch, tiny_onnx, tmp_path):
    install(monkeypatch, "10.3.0")
    TensorRTTarget(cache_root=tmp_path).build(tiny_onnx, "fp32", None, tmp_path / "a")
    install(monkeypatch, "10.3.0", gpus=(("NVIDIA Jetson AGX Orin", (8, 7), 8),))   # a smaller Orin module
    with pytest.raises(UserError, match="16 SMs.*8 SMs"):
        TensorRTTarget().load(tmp_path / "a")


@pytest.mark.parametrize("version", VERSIONS)
def test_bench_trt_end_to_end(monkeypatch, tmp_path, tmp_path_factory, fast_load_split, version):
    install(monkeypatch, version)
    (tmp_path / "work").mkdir()
    for name in ("wae-resnet20", "resnet20"):  # exported once per run: the bench reuses a workdir's exports
        copy_export(reference_export(tmp_path_factory, name), tmp_path / "work")
    monkeypatch.setenv("WAE_CACHE", str(tmp_path / "cache"))
    args = ["bench", "--target", "trt", "--models", "models/wae-resnet20.pt,models/resnet20.pt",
            "--precision", "fp32", "--batch", "1,8,100", "--eval-size", "100", "--min-time", "0.05",
            "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "r.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    entries = json.loads((tmp_path / "r.json").read_text())["entries"]
    assert {(e["arch"], e["batch"]) for e in entries} == {(a, b) for a in ("wae-resnet20", "resnet20")
                                                          for b in (1, 8, 100)}
    assert all(e["target"] == "trt" and e["accuracy"]["n"] == 100 and e["accuracy"]["top1"] > 50 for e in entries)
    # one profile per timed batch, each tuned (opt) for it; the largest batch sets the max
    manifest = json.loads((tmp_path / "work" / "wae-resnet20.trt-fp32" / "manifest.json").read_text())
    assert [[s[0] for s in p[INPUT]] for p in manifest["details"]["profiles"]] == [[1, 1, 100], [1, 8, 100],
                                                                                     [1, 100, 100]]
    assert "Conv" in manifest["executed"]["fp32"]


def test_evaluate_runner_feeds_batches_of_100(standin, tiny_onnx, tmp_path):
    from wae_deploy.runtime.data import ImageSet
    from wae_deploy.runtime.preprocess import Preprocessing

    target = TensorRTTarget(cache_root=tmp_path)
    target.build(tiny_onnx, "fp32", None, tmp_path / "a")
    data = ImageSet(np.random.default_rng(2).integers(0, 256, (150, 16, 16, 3)).astype(np.uint8),
                    np.zeros(150, np.int64), [str(i) for i in range(10)])
    spec = Preprocessing(resize=16, crop=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    with target.load(tmp_path / "a") as runner:
        got = evaluate_runner(runner, data, spec)
    assert got["n"] == 150


def test_each_timed_batch_runs_on_the_profile_tuned_for_it(standin, tiny_onnx, tmp_path):
    target = TensorRTTarget.for_batches((8, 1, 100), cache_root=tmp_path)
    art = target.build(tiny_onnx, "fp32", None, tmp_path / "a")
    assert target.same_build(art.manifest) and not TensorRTTarget().same_build(art.manifest)
    x = _images(100)
    with target.load(tmp_path / "a") as runner:
        for n in (1, 8, 100, 5):
            runner.infer(x[:n])
        opts = [runner._engine.get_tensor_profile_shape(INPUT, p)[1][0] for p, _ in runner._context.runs]
        batches = [b for _, b in runner._context.runs]
    assert batches == [1, 8, 100, 5]
    assert opts == [1, 8, 100, 8]           # 5 has no profile of its own: the nearest opt serves it


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_manifest_says_what_runs_in_which_precision(standin, tiny_onnx, tmp_path, precision):
    """"executed" comes from TensorRT's engine inspector (DETAILED layer information), as ORT/OpenVINO's do."""
    from wae_deploy.runtime.data import ImageSet

    calib = ImageSet(np.random.default_rng(1).integers(0, 256, (16, 16, 16, 3)).astype(np.uint8),
                     np.zeros(16, np.int64), [str(i) for i in range(10)])
    art = TensorRTTarget(cache_root=tmp_path).build(tiny_onnx, precision, calib if precision == "int8" else None,
                                                     tmp_path / "a")
    executed = art.manifest["executed"]
    assert executed[precision]["Conv"] == 2, executed          # the tiny net's two convolutions
    if precision != "int8":
        assert set(executed) == {precision}
    assert not standin[2].contexts and not standin[2].blocks   # the readback left no context or memory behind


def test_layer_datatypes_from_the_inspector_format_strings():
    from wae_deploy.convert.targets.tensorrt.layers import datatype

    assert datatype("Row major linear FP32") == "fp32"
    assert datatype("Channel major FP16 format where channel % 8 == 0") == "fp16"
    assert datatype("Row major linear Int8 format") == "int8"
    assert datatype("Row major linear BFloat16 format") == "bf16"
    assert datatype("N/A due to dynamic shapes") is None


def _png(path):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("elsewhere", [dict(version="11.1.0"),
                                       dict(version="10.3.0", gpus=(("NVIDIA Jetson AGX Orin", (8, 7), 8),)),
                                       dict(version="10.3.0", gpus=(("NVIDIA A100", (8, 0), 108),))])
def test_cli_refuses_a_foreign_engine_in_one_line_before_the_gpu(monkeypatch, tiny_onnx, tmp_path, elsewhere):
    """Built on an AGX Orin (16 SMs) with 10.3; run with another TensorRT, a smaller Orin, another GPU."""
    install(monkeypatch, "10.3.0")
    TensorRTTarget(cache_root=tmp_path).build(tiny_onnx, "fp32", None, tmp_path / "a")
    trt, _, memory = install(monkeypatch, **elsewhere)
    monkeypatch.setattr(trt.Runtime, "deserialize_cuda_engine", lambda *a: pytest.fail("deserialized"))
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "a"), str(_png(tmp_path / "x.png"))])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "rebuild" in lines[0]
    assert not memory.contexts and not memory.blocks            # no context made current, nothing allocated
