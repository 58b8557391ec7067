"""The device side: `wae-deploy predict`, the `wd.*` API, and a runtime that needs no torch.

The README's Python example runs first (it exports the reference WAE-ResNet-20 and builds it for
ONNX Runtime); every other test reuses what it wrote. Images are real CIFAR-10 test images.
Runtime commands run in real processes with torch made unimportable (sys.modules["torch"] = None).
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_small import REPO, assert_clean_error, cli_env
from PIL import Image

import wae_deploy as wd
from wae_deploy.core import moved
from wae_deploy.core.errors import UserError

# Imported by a device: every module of the torch-free packages, and the bench and CLI that a device runs.
DEVICE_PACKAGES = ("core", "runtime", "convert")
RUNTIME_MODULES = ["wae_deploy", "wae_deploy.cli", *(
    "wae_deploy." + ".".join(p.relative_to(REPO / "wae_deploy").with_suffix("").parts).removesuffix(".__init__")
    for package in DEVICE_PACKAGES for p in sorted((REPO / "wae_deploy" / package).rglob("*.py"))),
    *(f"wae_deploy.benchmark.{m}" for m in ("gate", "report", "suite", "environment"))]
# The same modules by their names before 0.1's layout (core/moved.py), as scripts written then import them.
OLD_RUNTIME_MODULES = [f"wae_deploy.{old}" for old, new in moved.MOVED.items()
                       if f"wae_deploy.{new}" in RUNTIME_MODULES]
NO_TORCH = "import sys; sys.modules['torch'] = None; "


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"<!-- the test suite runs this block.*?-->\n```python\n(.*?)```", text, re.S).group(1)


def run_without_torch(args: list, cwd: Path) -> subprocess.CompletedProcess:
    code = NO_TORCH + "from wae_deploy.cli import main; sys.argv[0] = 'wae-deploy'; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=cli_env(PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def work(tmp_path_factory, data_root) -> Path:
    """A folder where the README example ran: wae.onnx, wae.ort-fp32/, cat.jpg, ship.jpg."""
    folder = tmp_path_factory.mktemp("predict")
    (folder / "models").mkdir()
    shutil.copyfile(REPO / "models" / "wae-resnet20.pt", folder / "models" / "wae-resnet20.pt")
    shutil.copyfile(data_root / "test" / "cat" / "0000.jpg", folder / "cat.jpg")
    shutil.copyfile(data_root / "test" / "ship" / "0000.jpg", folder / "ship.jpg")
    return folder


@pytest.fixture(scope="module")
def readme_output(work) -> str:
    import contextlib
    import io
    import os

    out, before = io.StringIO(), os.getcwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(readme_example(), "README.md", "exec"), {})
    finally:
        os.chdir(before)
    return out.getvalue()


def test_readme_example_runs(readme_output, work):
    lines = readme_output.splitlines()
    assert lines[0] == "wae.ort-fp32 ort fp32 ['airplane', 'automobile', 'bird']"
    assert lines[1].startswith("cat.jpg [('cat', ") and lines[2].startswith("ship.jpg [('ship', ")
    assert lines[3] == "(1, 10)"


@pytest.fixture(scope="module")
def folder(work, readme_output, data_root) -> Path:
    """Two real images of each of three classes, one file that is not an image, in nested folders."""
    images = work / "images"
    for cls in ("cat", "ship", "horse"):
        (images / cls).mkdir(parents=True)
        for name in ("0001.jpg", "0002.jpg"):
            shutil.copyfile(data_root / "test" / cls / name, images / cls / name)
    (images / "horse" / "broken.jpg").write_bytes(b"not a jpeg")
    return images


def test_import_graph_of_the_runtime_has_no_torch(tmp_path):
    names = RUNTIME_MODULES + OLD_RUNTIME_MODULES
    code = NO_TORCH + f"import importlib; [importlib.import_module(m) for m in {names!r}]; " \
        "print(sorted(m for m in sys.modules if m.startswith('wae_deploy')))"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(PYTHONPATH=str(REPO)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = eval(r.stdout)  # noqa: S307 - our own subprocess printed a list literal
    assert len(loaded) > 40 and not any(m.startswith("wae_deploy.training") for m in loaded), loaded
    assert {"wae_deploy.targets.onnxruntime", "wae_deploy.build", "wae_deploy.bench.gate"} <= set(loaded)


def test_build_and_predict_without_torch(work, folder):
    r = run_without_torch(["build", "wae.onnx", "--target", "openvino", "--precision", "fp32"], work)
    assert r.returncode == 0, r.stderr
    r = run_without_torch(["predict", "wae.openvino-fp32", folder, "--top-k", "2"], work)
    assert "Traceback" not in r.stderr and r.returncode == 2, r.stderr  # the broken file
    lines = r.stdout.splitlines()
    assert len(lines) == 6, r.stdout
    right = sum(line.split(": ")[1].startswith(Path(line.split(":")[0]).parent.name) for line in lines)
    assert right >= 5, r.stdout  # the reference model scores 80% top-1
    assert all(len(line.split(", ")) == 2 for line in lines)
    err = r.stderr.splitlines()
    assert err[0].startswith("error: unreadable image") and "broken.jpg" in err[0]
    assert re.match(r"6 images in [\d.]+ s \([\d.]+ images/s, decoding included\) on openvino fp32; 1 unreadable",
                    err[1]), err
    assert err[2] == "error: 1 of 7 images could not be read (listed above)"


def test_predict_json_lines_on_an_onnx_model_and_an_artifact_agree(work, readme_output):
    outs = []
    for model in ("wae.onnx", "wae.ort-fp32"):
        r = run_without_torch(["predict", model, "cat.jpg", "ship.jpg", "--json", "--top-k", "3", "--batch", "1"],
                              work)
        assert r.returncode == 0, r.stderr
        outs.append([json.loads(line) for line in r.stdout.splitlines()])
    onnx_rows, artifact_rows = outs
    assert [row["file"] for row in onnx_rows] == ["cat.jpg", "ship.jpg"]
    assert [row["top"][0]["class"] for row in onnx_rows] == ["cat", "ship"]
    for a, b in zip(onnx_rows, artifact_rows):
        assert a["index"] == b["index"] and len(a["top"]) == 3
        assert abs(a["top"][0]["probability"] - b["top"][0]["probability"]) < 1e-4


@pytest.mark.parametrize("case", ["bad image", "empty folder", "other runtime version", "missing image",
                                  "wrong target", "corrupt onnx", "not an artifact"])
def test_predict_bad_input_is_one_line_exit_2(work, readme_output, tmp_path, case):
    model, images = "wae.ort-fp32", ["cat.jpg"]
    if case == "bad image":
        (tmp_path / "x.png").write_bytes(b"\x89PNG but truncated")
        images, match = [tmp_path / "x.png"], "unreadable image"
    elif case == "empty folder":
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        images, match = [tmp_path / "empty"], "no images in"
    elif case == "other runtime version":
        model = tmp_path / "old"
        shutil.copytree(work / "wae.ort-fp32", model)
        manifest = json.loads((model / "manifest.json").read_text())
        (model / "manifest.json").write_text(json.dumps({**manifest, "runtime_version": "0.0.1"}))
        match = "rebuild it"
    elif case == "missing image":
        images, match = [tmp_path / "nope.jpg"], "image not found"
    elif case == "corrupt onnx":
        model = tmp_path / "cut.onnx"
        model.write_bytes((work / "wae.onnx").read_bytes()[:5000])
        match = "not a readable ONNX model"
    elif case == "not an artifact":
        model, match = tmp_path, "not a wae-deploy artifact"
    else:
        model, images, match = "wae.ort-fp32", ["cat.jpg", "--target", "openvino"], "built for target 'ort'"
    r = run_without_torch(["predict", model, *images], work)
    assert_clean_error(r.returncode, r.stdout, r.stderr, 2, match)
    assert r.stdout == ""


def test_api_predict_takes_paths_pil_images_and_arrays(work, readme_output):
    with wd.load(work / "wae.ort-fp32") as model:
        assert (model.target, model.precision, model.classes[3]) == ("ort", "fp32", "cat")
        pil = Image.open(work / "cat.jpg")
        by_path, by_pil, by_array = model.predict([work / "cat.jpg", pil, np.asarray(pil.convert("RGB"))])
        assert by_path.top == by_pil.top == by_array.top and by_path.top[0][0] == "cat"
        assert (by_pil.source, by_array.source) == ("image 1", "image 2")
        assert model.predict(work / "ship.jpg", top_k=1)[0].top[0][0] == "ship"  # one path, not a list
        assert model.predict(pil)[0].top == by_pil.top
        stacked = np.stack([model.prepare(work / "cat.jpg"), model.prepare(work / "ship.jpg")])
        assert [p.top[0][0] for p in model.predict(stacked)] == ["cat", "ship"]  # N x H x W x 3: N images
        logits = model.infer(model.preprocessing.normalize(model.prepare(work / "cat.jpg")[None]))
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert probs[0].max() == pytest.approx(by_path.top[0][1], abs=1e-6)
        with pytest.raises(UserError, match="H x W x 3 uint8"):
            model.predict([np.zeros((4, 4), np.float32)])


def test_api_accuracy_on_real_test_images(work, readme_output, cifar_test):
    sample = cifar_test.sample(200, seed=5)
    with wd.load(work / "wae.onnx") as model:  # an ONNX model as it is, on ONNX Runtime
        predictions = model.classify(sample.images, [str(i) for i in range(len(sample))], top_k=1)
    top1 = np.mean([p.index == label for p, label in zip(predictions, sample.labels)])
    assert top1 > 0.7, top1  # the reference WAE-ResNet-20 scores 80% on the whole split


def test_api_bench_returns_the_results_of_a_real_run(work, readme_output, tmp_path, data_root):
    results = wd.bench(["ort"], [work / "wae.onnx"], precisions=["fp32"], batches=[1], eval_size=100, threads=1,
                       min_time_s=0.2, min_iters=5, workdir=tmp_path, data=str(data_root))
    (entry,) = results["entries"]
    assert (entry["model"], entry["target"], entry["precision"], entry["batch"]) == ("wae", "ort", "fp32", 1)
    assert entry["accuracy"]["top1"] > 60 and entry["accuracy"]["n"] == 100
    assert entry["latency"]["median_ms"] > 0


def test_api_steps_are_plain_functions_that_survive_importing_every_module(work, readme_output, tmp_path):
    import wae_deploy.benchmark.suite  # noqa: F401 - imports build and export too, as any caller may
    import wae_deploy.convert.build  # noqa: F401
    import wae_deploy.training.export  # noqa: F401

    assert all(inspect.isfunction(f) for f in (wd.export, wd.build, wd.bench, wd.load))
    art = wd.build(work / "wae.onnx", "ort", "fp32", tmp_path / "again")
    assert wd.build(work / "wae.onnx", "ort", "fp32", tmp_path / "again").path == art.path == tmp_path / "again"
