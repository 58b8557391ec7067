"""`bench` on what a device has: artifact folders and ONNX models timed as they are, with no torch.

The reference WAE-ResNet-20 is exported once (wae.onnx) and built for ONNX Runtime beside it
(wae.ort-fp32/); the reference ResNet-20 checkpoint goes through the bench's own export. Two
copies of wae.onnx stand for files from elsewhere: old.onnx, exported before the multiply-adds
travelled in the metadata, and foreign.onnx, with no wae-deploy metadata at all.

Expected multiply-adds per 32x32 image: ResNet-20 by hand, 3x3 convolutions (stem 3->16 at 32x32,
then 16, 32 and 64 channels at 32, 16 and 8 pixels, six each, the first of stages 2 and 3 taking
half the channels in), two 1x1 projection shortcuts and the 64->10 classifier:
    32*32*16*27 + 6*32*32*16*144 + (16*16*32*144 + 5*16*16*32*288) + (8*8*64*288 + 5*8*8*64*576)
    + 16*16*32*16 + 8*8*64*32 + 64*10 = 40,813,184;
WAE-ResNet-20: 16,272,256, as `wae-deploy flops wae-resnet20` prints it (0.016 G).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from fixtures_small import REPO, assert_clean_error, cli_env, copy_export, reference_export

import wae_deploy as wd
from wae_deploy.benchmark.suite import BenchConfig, run
from wae_deploy.runtime import onnx_meta

RESNET20_MACS = 40_813_184
WAE_RESNET20_MACS = 16_272_256
NO_TORCH = ("import sys; sys.modules['torch'] = None; from wae_deploy.cli import main; "
            "sys.argv[0] = 'wae-deploy'; main()")


def bench_without_torch(args: list, cwd: Path, target: str = "ort") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, "bench", "--target", target, "--min-time", "0.2",
                           "--threads", "1", *map(str, args)], cwd=cwd, env=cli_env(PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)


def _copy_without(src: Path, dst: Path, drop) -> Path:
    model = onnx.load(str(src))
    keep = [p for p in model.metadata_props if not drop(p.key)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory, data_root) -> Path:
    folder = tmp_path_factory.mktemp("bench-artifacts")
    onnx_path = copy_export(reference_export(tmp_path_factory, "wae-resnet20"), folder, "wae", checkpoint=False)
    wd.build(onnx_path, "ort", "fp32")
    _copy_without(onnx_path, folder / "old.onnx", lambda k: k in ("wae_deploy.macs", "wae_deploy.baseline_arch"))
    _copy_without(onnx_path, folder / "foreign.onnx", lambda k: k.startswith(onnx_meta.PREFIX))
    return folder


@pytest.fixture(scope="module")
def mixed(files, data_root) -> dict:
    """A checkpoint, an ONNX model, an artifact and an older ONNX model in one run, scored on --data, torch at hand."""
    models = [REPO / "models" / "resnet20.pt", files / "wae.onnx", files / "wae.ort-fp32/", files / "old.onnx"]
    return run(BenchConfig(targets=["ort"], models=[str(m) for m in models], precisions=["fp32"], batches=[1],
                           data=str(data_root), eval_size=100, min_time_s=0.2, min_iters=3, workdir=files / "work",
                           threads=1), log=lambda *_: None)


def test_exported_onnx_and_its_artifact_carry_the_multiply_adds(files):
    info = onnx_meta.read(files / "wae.onnx")
    assert info.extra["macs"] == WAE_RESNET20_MACS and info.extra["baseline_arch"] == "resnet20"
    manifest = json.loads((files / "wae.ort-fp32" / "manifest.json").read_text())
    assert manifest["source_metadata"]["macs"] == WAE_RESNET20_MACS


def test_mixed_checkpoint_onnx_and_artifact_in_one_run(mixed, files):
    entries = {e["model"]: e for e in mixed["entries"]}
    assert list(entries) == ["resnet20", "wae", "wae.ort-fp32", "old"] and len(mixed["entries"]) == 4
    assert {n: e["source"] for n, e in entries.items()} == {
        "resnet20": "checkpoint", "wae": "onnx", "wae.ort-fp32": "artifact", "old": "onnx"}
    work = files / "work"
    assert entries["resnet20"]["artifact"] == str(work / "resnet20.ort-fp32")
    assert entries["wae"]["artifact"] == str(work / "wae.ort-fp32")  # an ONNX is built in the workdir
    assert entries["wae.ort-fp32"]["artifact"] == str(files / "wae.ort-fp32")  # an artifact runs as it is
    for e in entries.values():  # the reference models: 88% (ResNet-20) and 80% (WAE) on the whole split
        assert e["input"] == "images" and e["accuracy"]["n"] == 100 and e["accuracy"]["top1"] > 65
    assert entries["wae"]["accuracy"] == entries["wae.ort-fp32"]["accuracy"] == entries["old"]["accuracy"]
    for name in ("wae", "wae.ort-fp32", "old"):
        assert entries[name]["baseline"] == "resnet20" and entries[name]["speedup_vs_baseline"] > 0
        # from the metadata, the manifest, and for old.onnx counted again by torch
        assert entries[name]["gmacs"] == pytest.approx(WAE_RESNET20_MACS / 1e9, rel=1e-12)
    assert entries["resnet20"]["gmacs"] == pytest.approx(RESNET20_MACS / 1e9, rel=1e-12)
    assert entries["resnet20"]["baseline"] is None
    assert sorted(c["b"] for c in mixed["comparisons"]) == ["old", "wae", "wae.ort-fp32"]
    assert {c["a"] for c in mixed["comparisons"]} == {"resnet20"}


def test_bench_of_artifacts_and_onnx_models_runs_without_torch(mixed, files, tmp_path):
    models = [files / "work" / "resnet20.ort-fp32", files / "wae.ort-fp32", files / "old.onnx",
              files / "foreign.onnx"]
    r = bench_without_torch(["--models", ",".join(map(str, models)), "--precision", "fp32", "--batch", "1,2",
                             "--workdir", tmp_path / "w", "--out", tmp_path / "r.json"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "speed-up wae.ort-fp32 over resnet20.ort-fp32 (ort fp32 batch 2)" in r.stdout
    results = json.loads((tmp_path / "r.json").read_text())
    entries = {(e["model"], e["batch"]): e for e in results["entries"]}
    assert len(results["entries"]) == len(entries) == 8
    assert all(e["accuracy"] is None and e["input"] == "synthetic" for e in entries.values())
    for batch in (1, 2):
        wae, base = entries["wae.ort-fp32", batch], entries["resnet20.ort-fp32", batch]
        assert wae["baseline"] == "resnet20.ort-fp32" and wae["speedup_vs_baseline"] > 0
        assert wae["gmacs"] == pytest.approx(WAE_RESNET20_MACS / 1e9, rel=1e-12) and wae["gflops_per_s"] > 0
        assert base["gmacs"] == pytest.approx(RESNET20_MACS / 1e9, rel=1e-12) and base["baseline"] is None
        # what the files do not say stays unknown: no count, no guessed pair
        for name in ("old", "foreign"):
            e = entries[name, batch]
            assert e["gmacs"] is None and e["gflops_per_s"] is None and e["baseline"] is None
            assert e["speedup_vs_baseline"] is None and e["latency"]["median_ms"] > 0
        assert entries["old", batch]["arch"] == "wae-resnet20"
        assert entries["foreign", batch]["artifact"] == str(files / "foreign.onnx")  # timed as it is
    assert len(results["comparisons"]) == 2


@pytest.mark.parametrize("case", ["not an artifact", "artifact of another target", "foreign onnx with data"])
def test_bad_models_are_one_line_exit_2(files, tmp_path, data_root, case):
    target, models, args = "ort", files / "foreign.onnx", ["--data", data_root]
    match = "foreign.onnx has no wae-deploy metadata, so its preprocessing is unknown"
    if case == "not an artifact":
        models, args, match = tmp_path, [], "not a wae-deploy artifact"
    elif case == "artifact of another target":
        target, models, args = "openvino", files / "wae.ort-fp32", []
        match = "was built for target 'ort', which is not among --target openvino"
    r = bench_without_torch(["--models", models, *args, "--workdir", tmp_path / "w"], tmp_path, target)
    assert_clean_error(r.returncode, r.stdout, r.stderr, 2, match)
