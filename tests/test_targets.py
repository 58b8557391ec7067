"""Targets behind one interface: build an artifact for a precision, load it, infer.

The reference WAE-ResNet-20 (models/wae-resnet20.pt) is exported once per module and built
for ONNX Runtime (fp32, int8), OpenVINO (fp32, bf16, fp16, int8) and torch, with a small
calibration set. The bad-input catalogue lives in test_hardening.py / test_faults.py.

A trained model, because an untrained one predicts one class everywhere and any build agrees
with it: FP32 runtimes are held to 1e-4 on the logits, BF16/FP16 to 90% top-1 agreement, and INT8
to what its build guarantees on any CPU: the accuracy guard's bound on held-out photos, which on
other photos holds up to their sampling error (within_guard).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from fixtures_small import copy_export, reference_export

from wae_deploy.cli import main
from wae_deploy.convert.build import build, calibration_set
from wae_deploy.convert.int8_policy import PARTS, guard_steps, int8_plan
from wae_deploy.convert.targets import get_target
from wae_deploy.convert.targets.openvino import COMPUTE
from wae_deploy.core.errors import UserError
from wae_deploy.runtime.artifact import KEYS as ARTIFACT_KEYS
from wae_deploy.runtime.data import load_split
from wae_deploy.runtime.machine import cpu_has, host_cpu_class
from wae_deploy.runtime.preprocess import CIFAR
from wae_deploy.training import checkpoint

CALIB = 32
REFERENCE = Path(__file__).resolve().parent.parent / "models" / "wae-resnet20.pt"
BUILDS = [("ort", "fp32"), ("ort", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "fp16"),
          ("openvino", "int8")]
PACKAGE = {"ort": "onnxruntime", "openvino": "openvino"}
MODEL_FILES = {"ort": ["model.onnx"], "openvino": ["model.xml", "model.bin"]}
HAS_BF16 = cpu_has("avx512_bf16") or cpu_has("amx_bf16")


def _quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def wae_onnx(tmp_path_factory):
    """wae.onnx with the checkpoint it came from beside it (wae.pt), as the torch target wants."""
    return copy_export(reference_export(tmp_path_factory, "wae-resnet20"), tmp_path_factory.mktemp("targets"), "wae")


GUARD_PHOTOS = 500


@pytest.fixture(scope="module")
def artifacts(wae_onnx):
    """(target, precision) -> (artifact folder, manifest returned by build). INT8 under the default guard."""
    out = {}
    for target, precision in BUILDS:
        if precision == "bf16" and not HAS_BF16:
            continue
        out[target, precision] = build(wae_onnx, target, precision, calib_size=CALIB, eval_size=GUARD_PHOTOS,
                                       log=_quiet)
    return out


def within_guard(hits: np.ndarray, fp32_hits: np.ndarray, manifest: dict) -> str | None:
    """Why an INT8 artifact's top-1 on photos other than the guard's breaks its guarantee, or None.

    The guard held the drop within `max_drop` points on its held-out photos; on another sample the
    paired difference also carries sampling error, 100 * sqrt(b + c) / n for b + c photos on which
    the two disagree (McNemar), so the drop may exceed the bound by three of those, no more.
    """
    bound = manifest["accuracy_bound"]
    drop = 100.0 * (fp32_hits.mean() - hits.mean())
    margin = 3 * 100.0 * np.sqrt((hits != fp32_hits).sum()) / len(hits)
    if drop > bound["max_drop"] + margin:
        return f"drop {drop:.2f} points > bound {bound['max_drop']} + sampling margin {margin:.2f}"
    return None


@pytest.fixture(scope="module")
def images(cifar_test) -> np.ndarray:
    return CIFAR.normalize(cifar_test.sample(200, seed=7).images)


def infer(artifact, target: str, images: np.ndarray, chunk: int = 50) -> np.ndarray:
    with get_target(target).load(artifact, threads=1) as runner:
        return np.concatenate([runner.infer(images[i:i + chunk]) for i in range(0, len(images), chunk)])


@pytest.fixture(scope="module")
def reference(artifacts, images) -> np.ndarray:
    """Logits of the FP32 ONNX Runtime artifact: what every other build is compared with."""
    return infer(artifacts["ort", "fp32"].path, "ort", images)


def conv_nodes(onnx_path, prefix: str = "") -> int:
    return sum(n.op_type == "Conv" and n.name.startswith(prefix) for n in onnx.load(str(onnx_path)).graph.node)


def kept_convs(manifest: dict, onnx_path) -> int:
    """The convolutions an INT8 build left in float: the parts it kept (the CPU class's recipe, the guard's
    steps), or the layers NNCF's per-layer search reverted."""
    convs = [n.name for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "Conv"]
    if manifest["accuracy_control"]:
        return len(set(manifest["accuracy_control"]["float_layers"]) & set(convs))
    return sum(any(re.search(PARTS.get(p, p), name) for p in manifest["keep_float"]) for name in convs)


def _get(artifacts, target, precision):
    if (target, precision) not in artifacts:
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX")
    return artifacts[target, precision]


@pytest.mark.parametrize("target,precision", BUILDS)
def test_artifact_folder_and_manifest(artifacts, wae_onnx, data_root, target, precision):
    art = _get(artifacts, target, precision)
    path, manifest = art.path, art.manifest
    assert path == wae_onnx.with_name(f"wae.{target}-{precision}") and path.is_dir()
    assert sorted(p.name for p in path.iterdir()) == sorted(MODEL_FILES[target] + ["manifest.json"])
    on_disk = json.loads((path / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest, default=str))
    assert on_disk["target"] == target and on_disk["precision"] == precision
    assert on_disk["runtime_version"] == importlib.metadata.version(PACKAGE[target])
    assert on_disk["source"] == "wae.onnx" and on_disk["source_sha256"] == checkpoint.sha256(wae_onnx)
    assert on_disk["arch"] == "wae-resnet20"
    assert on_disk["tool_versions"][PACKAGE[target]] == on_disk["runtime_version"]
    assert on_disk["executed"]
    if precision == "int8":
        assert on_disk["calibration"] == {"root": str(data_root), "split": "train", "size": CALIB, "seed": 0}
    else:
        assert on_disk["calibration"] is None
    if target == "openvino":
        assert on_disk["details"]["compute_precision"] == COMPUTE[precision]
    # the device needs nothing beside the artifact: preprocessing and class names travel in it
    assert on_disk["classes"][:2] == ["airplane", "automobile"] and art.preprocessing == CIFAR
    assert set(on_disk) == set(ARTIFACT_KEYS)


def test_ort_int8_really_runs_int8(artifacts, wae_onnx):
    convs = conv_nodes(wae_onnx)
    fp32 = artifacts["ort", "fp32"].manifest["executed"]
    assert fp32["int8_ops"] == {}
    assert sum(fp32["float_ops"].get(k, 0) for k in ("Conv", "FusedConv", "NchwcConv")) == convs
    manifest = artifacts["ort", "int8"].manifest
    int8 = manifest["executed"]
    kept = kept_convs(manifest, wae_onnx)
    assert kept < convs
    assert int8["int8_ops"].get("QLinearConv") == convs - kept, int8
    assert sum(int8["float_ops"].get(k, 0) for k in ("Conv", "FusedConv", "NchwcConv")) == kept, int8
    # The INT8 build leaves no weight that ORT turns back into FP32 on every call (qdq.py).
    assert int8["weight_dequantized_per_call"] == [], int8


def test_openvino_reports_precision_each_layer_runs_in(artifacts):
    def layers(precision):
        executed = _get(artifacts, "openvino", precision).manifest["executed"]
        assert executed["weight_dequantized_per_call"] == [], executed  # every weight read from a constant
        return executed["layers"]

    fp32 = layers("fp32")
    assert sum(fp32.values()) > 0 and all(k.endswith(":f32") for k in fp32), fp32
    assert any(k.startswith("Convolution:") for k in fp32)
    total_convs = sum(v for k, v in fp32.items() if k.startswith("Convolution:"))
    int8 = layers("int8")
    int8_convs = sum(v for k, v in int8.items() if k in ("Convolution:u8", "Convolution:i8"))
    kept = kept_convs(artifacts["openvino", "int8"].manifest, artifacts["ort", "fp32"].path / "model.onnx")
    assert int8_convs == total_convs - kept and int8.get("Convolution:f32", 0) == kept, int8
    fp16_manifest = artifacts["openvino", "fp16"].manifest
    assert "FP16 weights" in fp16_manifest["note"] and "f32" in fp16_manifest["note"]
    # what the note says is what the runtime graph shows: f32 compute, not f16
    assert all(k.endswith(":f32") for k in fp16_manifest["executed"]["layers"]), fp16_manifest["executed"]
    bf16 = layers("bf16")
    assert all(k.endswith(":bf16") for k in bf16), bf16
    assert sum(v for k, v in bf16.items() if k.startswith("Convolution:")) == total_convs


@pytest.mark.parametrize("target,precision", BUILDS)
def test_artifact_infers_like_fp32_ort(artifacts, images, reference, cifar_test, target, precision):
    path = _get(artifacts, target, precision).path
    logits = infer(path, target, images)
    assert logits.shape == (200, 10) and logits.dtype == np.float32 and np.isfinite(logits).all()
    agreement = (logits.argmax(1) == reference.argmax(1)).mean()
    if precision == "fp32":
        assert np.abs(logits - reference).max() <= 1e-4
        assert agreement == 1.0
    elif precision == "int8":
        labels = cifar_test.sample(200, seed=7).labels
        broken = within_guard(logits.argmax(1) == labels, reference.argmax(1) == labels,
                              artifacts[target, precision].manifest)
        assert broken is None, f"{target} int8: {broken}"
    else:
        assert agreement >= 0.9, f"{target} {precision}: top-1 agreement {agreement:.2%}"
    # any batch size goes through (the export's batch axis is dynamic)
    with get_target(target).load(path, threads=1) as runner:
        assert runner.infer(images[:1]).shape == (1, 10)


def test_keep_float_encoder_leaves_decomposer_convs_in_float(wae_onnx, tmp_path):
    encoder_convs = conv_nodes(wae_onnx, "decomposer.")
    assert encoder_convs == 5  # three 16-channel convolutions and the I_L and I_H heads
    manifest = build(wae_onnx, "ort", "int8", tmp_path / "kept", calib_size=CALIB, keep_float=("encoder",),
                     log=_quiet).manifest
    ex = manifest["executed"]
    assert manifest["keep_float"] == ["encoder"]
    assert ex["float_ops"].get("Conv", 0) + ex["float_ops"].get("FusedConv", 0) == encoder_convs, ex
    assert ex["int8_ops"].get("QLinearConv") == conv_nodes(wae_onnx) - encoder_convs, ex


def test_int8_keeps_the_fixed_wavelet_in_float(tmp_path, tmp_path_factory):
    """Rounded to INT8 the 9/7 filters leak the image mean into the high bands: a DWT model's
    INT8 build keeps its one wavelet convolution in float unasked, and says so in the manifest."""
    path = copy_export(reference_export(tmp_path_factory, "resnet20-dwt"), tmp_path, "dwt")
    said = []
    manifest = build(path, "ort", "int8", tmp_path / "int8", calib_size=CALIB, log=said.append).manifest
    ex = manifest["executed"]
    assert conv_nodes(path, "decomposer/") == 1
    assert manifest["keep_float"] == ["encoder"] and any("wavelet in float" in line for line in said)
    assert ex["float_ops"].get("Conv", 0) + ex["float_ops"].get("FusedConv", 0) == conv_nodes(path, "decomposer/")
    assert ex["int8_ops"].get("QLinearConv") == conv_nodes(path) - conv_nodes(path, "decomposer/"), ex


@pytest.mark.parametrize("target", ["ort", "openvino"])
def test_load_refuses_artifact_of_another_runtime_version_or_target(artifacts, tmp_path, target):
    source = artifacts[target, "fp32"].path
    other = "openvino" if target == "ort" else "ort"
    with pytest.raises(UserError, match="built for target"):
        get_target(other).load(source)
    for field, value, message in [("runtime_version", "0.0.1", "rebuild it"),
                                  ("target", other, "built for target")]:
        copy = tmp_path / f"{field}-edited"
        shutil.copytree(source, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest[field] = value
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(UserError, match=message):
            get_target(target).load(copy)
    get_target(target).load(source).close()  # the original still loads


def test_calibration_sampling_is_deterministic(data_root, artifacts):
    a, meta_a = calibration_set(CIFAR, None, CALIB)
    b, meta_b = calibration_set(CIFAR, None, CALIB)
    assert len(a) == CALIB and meta_a == meta_b == {"root": str(data_root), "split": "train", "size": CALIB,
                                                    "seed": 0}
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    expected = load_split(data_root, "train", CIFAR).sample(CALIB, seed=0)  # the training split, seed 0
    assert np.array_equal(a.images, expected.images) and np.array_equal(a.labels, expected.labels)
    assert len(set(a.labels.tolist())) > 1
    # one calibration set for every target
    assert artifacts["ort", "int8"].manifest["calibration"] == artifacts["openvino", "int8"].manifest["calibration"]


@pytest.mark.parametrize("target", ["ort", "openvino"])
def test_int8_build_keeps_99_percent_of_fp32_on_its_held_out_photos(artifacts, target):
    path, manifest = artifacts[target, "int8"].path, artifacts[target, "int8"].manifest
    bound = manifest["accuracy_bound"]
    assert bound["guarded"] is True and bound["rule"] == "fraction of FP32" and bound["held_out"] == GUARD_PHOTOS
    assert bound["max_drop"] == round(bound["fp32_top1"] * 0.01, 3)
    assert bound["steps"][-1]["drop"] <= bound["max_drop"] < bound["fp32_top1"]  # the last step is what was kept
    assert all(s["drop"] > bound["max_drop"] for s in bound["steps"][:-1])      # and the first to meet it
    assert "disjoint from the calibration sample" in bound["held_out_source"]
    assert manifest["quantization"]["cpu_class"] == manifest["cpu"]["class"]
    assert json.loads((path / "manifest.json").read_text())["accuracy_bound"] == bound
    assert not any(p.name.startswith(".") for p in path.parent.iterdir()), "a temporary folder was left"


@pytest.mark.parametrize("target", ["ort", "openvino"])
def test_per_layer_search_runs_through_nncf(wae_onnx, cifar_test, images, reference, tmp_path, target, monkeypatch):
    """NNCF's accuracy control calls back into our validation with its own raw items and models, and
    the manifest's account of it is read from the model NNCF returned."""
    import nncf

    real, calls = nncf.quantize_with_accuracy_control, []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(nncf, "quantize_with_accuracy_control", spy)
    t = get_target(target)
    assert t.accuracy_control
    held_out = cifar_test.sample(60, seed=3)
    calib = cifar_test.sample(CALIB, seed=4)
    art = t.build(wae_onnx, "int8", calib, tmp_path / "a", keep_float=("encoder",), accuracy_control=(held_out, 0.5))
    assert len(calls) == 1 and calls[0]["max_drop"] == 0.005  # 0.5 points, as NNCF's fraction
    control = art.manifest["accuracy_control"]
    assert control["max_drop"] == 0.5 and control["held_out"] == 60 and art.path == tmp_path / "a"
    # the encoder's five convolutions were kept in float by request; whatever NNCF reverted is a real layer
    layers = {n.name for n in onnx.load(str(wae_onnx)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    assert {n for n in layers if n.startswith("decomposer.")} <= set(control["float_layers"]) <= layers
    logits = infer(tmp_path / "a", target, images)
    assert logits.shape == reference.shape and np.isfinite(logits).all()


# The reference checkpoint's score on CIFAR-10 test images sample(1000, seed=11), computed once with
# plain torch (model(x).argmax(1) == labels, no wae_deploy scoring code): 802 and 984 hits of 1000.
# The smallest top-1 margin on the sample is 0.013, far above any FP32 runtime's difference.
REFERENCE_SAMPLE = dict(n=1000, seed=11)
REFERENCE_TOP1, REFERENCE_TOP5 = 80.2, 98.4


@pytest.mark.parametrize("target,precision", [("ort", "fp32"), ("openvino", "fp32"), ("torch", "fp32"),
                                              ("ort", "int8"), ("openvino", "int8")])
def test_reference_model_scores_its_recorded_top1_through_every_runtime(artifacts, wae_onnx, cifar_test, tmp_path,
                                                                         target, precision):
    from wae_deploy.runtime.metrics import evaluate_runner

    data = cifar_test.sample(REFERENCE_SAMPLE["n"], seed=REFERENCE_SAMPLE["seed"])
    path = (build(wae_onnx, "torch", "fp32", tmp_path / "t", log=_quiet) if target == "torch"
            else artifacts[target, precision]).path
    with get_target(target).load(path, threads=1) as runner:
        got = evaluate_runner(runner, data, CIFAR)
        hits = infer(path, target, CIFAR.normalize(data.images)).argmax(1) == data.labels
    assert got["n"] == 1000
    if precision == "fp32":
        assert (got["top1"], got["top5"]) == (REFERENCE_TOP1, REFERENCE_TOP5)
    else:  # INT8 moves some images; what its build guarantees holds on the recorded sample too
        fp32_hits = infer(artifacts["ort", "fp32"].path, "ort", CIFAR.normalize(data.images)).argmax(1) == data.labels
        assert 100.0 * fp32_hits.mean() == REFERENCE_TOP1
        assert within_guard(hits, fp32_hits, artifacts[target, precision].manifest) is None


def test_impossible_accuracy_bound_exits_1_and_writes_nothing(wae_onnx, tmp_path, monkeypatch):
    """Every INT8 step is scored 100 points below its real top-1 (the FP32 reference, scored first,
    is not), so a bound of 0 cannot be met whatever the real drop on 100 images happens to be."""
    import wae_deploy.convert.build as build_module

    real, calls = build_module.evaluate_runner, []

    def penalised(*args, **kw):
        result = real(*args, **kw)
        calls.append(result)
        return result if len(calls) == 1 else {**result, "top1": result["top1"] - 100}

    monkeypatch.setattr(build_module, "evaluate_runner", penalised)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("wae.onnx",):
        shutil.copyfile(wae_onnx, src / name)
    out = tmp_path / "out" / "wae.ort-int8"
    out.parent.mkdir()
    res = CliRunner().invoke(main, ["build", str(src / "wae.onnx"), "--target", "ort", "--precision", "int8",
                                    "--calib-size", str(CALIB), "--eval-size", "100",
                                    "--max-accuracy-drop=0", "-o", str(out)])
    assert res.exit_code == 1, res.output
    assert "cannot keep the top-1 drop within 0" in res.output
    # every fallback step of this CPU class's recipe was tried before giving up
    kept = int8_plan(host_cpu_class(), "wae")[0]
    assert res.output.count("keeping") == len(guard_steps(kept, "int8", "wae")), res.output
    assert not out.exists()
    assert list(out.parent.iterdir()) == [] and sorted(p.name for p in src.iterdir()) == ["wae.onnx"]


def test_torch_target_needs_the_checkpoint_beside_the_onnx(wae_onnx, images, reference, tmp_path):
    assert wae_onnx.with_suffix(".pt").is_file()
    art = build(wae_onnx, "torch", "fp32", tmp_path / "wae.torch-fp32", log=_quiet)
    path, manifest = art.path, art.manifest
    assert manifest["target"] == "torch" and (path / "model.pt").is_file()
    assert checkpoint.sha256(path / "model.pt") == checkpoint.sha256(wae_onnx.with_suffix(".pt"))
    logits = infer(path, "torch", images)
    assert np.abs(logits - reference).max() <= 1e-4

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(wae_onnx, alone / "wae.onnx")
    with pytest.raises(UserError, match="needs the checkpoint"):
        build(alone / "wae.onnx", "torch", "fp32", log=_quiet)
    # a different checkpoint under the right name is refused too (matched by the SHA-256 in the metadata)
    other = checkpoint.load(wae_onnx.with_suffix(".pt"))
    other.metrics = {**other.metrics, "edited": True}
    checkpoint.save(other, alone / "wae.pt")
    with pytest.raises(UserError, match="needs the checkpoint"):
        build(alone / "wae.onnx", "torch", "fp32", log=_quiet)
    assert sorted(p.name for p in alone.iterdir()) == ["wae.onnx", "wae.pt"]
