"""The CPU class an INT8 build is for: read from /proc/cpuinfo, chosen by recipe, checked at load time.

tests/data/cpuinfo holds the model name and flags lines of real /proc/cpuinfo files, one per class
(their names start with the class): this project's AVX2-only AMD EPYC host, and machines recorded
in archspec's test data (Haswell, Zen 3, Skylake-SP, Cascade Lake, Zen 4, Alder Lake, Sapphire
Rapids, and an Arm Neoverse N2 that has no x86 class).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_small import assert_clean_error, run_cli

from wae_deploy.convert.build import build
from wae_deploy.convert.int8_policy import RECIPES, UNKNOWN, int8_plan
from wae_deploy.runtime import artifact, doctor, machine, predict
from wae_deploy.runtime.data import ImageSet

RECORDED = sorted((Path(__file__).parent / "data" / "cpuinfo").glob("*.txt"))


def _expected(path: Path) -> str | None:
    """The class a file's name starts with ("avx512-vnni-zen4" -> "avx512-vnni"); "unknown-..." -> None."""
    for cls in sorted(machine.CPU_CLASSES, key=len, reverse=True):  # "avx512-vnni" before "avx512"
        if path.stem.startswith(cls + "-"):
            return cls
    assert path.stem.startswith("unknown-"), path
    return None


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_class_from_recorded_cpuinfo(path, tmp_path):
    (tmp_path / "proc").mkdir()
    shutil.copy(path, tmp_path / "proc" / "cpuinfo")
    assert machine.host_cpu_class(tmp_path) == _expected(path)
    assert doctor.cpu_info(tmp_path)["class"] == _expected(path)


def test_every_class_has_a_recording_and_a_recipe():
    assert {_expected(p) for p in RECORDED} == {*machine.CPU_CLASSES, None}
    assert set(RECIPES) == set(machine.CPU_CLASSES)


def test_recipe_without_vnni_uses_7_bit_weights_and_with_vnni_nncf_default():
    for cls in ("avx2", "avx512", None):
        kept, fix, record = int8_plan(cls, "wae")
        assert fix is True and kept == ("encoder-first",) and record["cpu_class"] == cls
    for cls in ("avx512-vnni", "avx-vnni", "amx"):
        assert int8_plan(cls, "wae")[:2] == ((), False)
    assert int8_plan(None, "wae")[2]["why"] == UNKNOWN.why
    # a plain network has no encoder; the DWT's wavelet stays in float whatever the class
    assert int8_plan("avx2", None, ("x",))[:2] == (("x",), True)
    assert int8_plan("avx2", "dwt")[0] == ("encoder",) and int8_plan("amx", "dwt")[0] == ("encoder",)
    assert int8_plan("amx", "wae", ("encoder-first",))[0] == ("encoder-first",)
    assert int8_plan("avx2", "wae", ("encoder", "high"))[0] == ("encoder", "high")  # its first conv included
    # a GPU engine takes neither the class's parts nor its overflow fix
    assert int8_plan("avx2", "wae", cpu_target=False)[:2] == ((), False)


def test_held_out_draw_never_shares_an_image_with_the_calibration_draw():
    data = ImageSet(np.zeros((500, 1, 1, 3), np.uint8), np.arange(500), ["x"])
    calib, held = data.sample(300, seed=0), data.sample(150, seed=0, skip=300)
    assert len(calib) == 300 and len(held) == 150 and not set(calib.labels) & set(held.labels)
    assert len(data.sample(400, seed=0, skip=300)) == 200  # what is left, no more
    assert data.sample(500) is data


def _int8_artifact(tmp_path, tiny_onnx, measured_on) -> Path:
    """A real ORT artifact of the tiny model, relabelled as INT8 built on `measured_on`."""
    art = build(tiny_onnx, "ort", "fp32", tmp_path / "a", log=lambda *a: None)
    cpu = None if measured_on == "missing" else {"class": measured_on, "measured_on": measured_on}
    art.updated(precision="int8", cpu=cpu)
    return art.path


@pytest.mark.parametrize("built,host,warned", [
    ("avx512-vnni", "avx2", "scored on a CPU of class avx512-vnni; this host's class is avx2"),
    ("amx", "amx", None),
    ("missing", "avx2", "records no known CPU class (none)"),
    ("avx3", "avx2", "records no known CPU class (avx3)"),
])
def test_load_warns_once_when_the_host_class_differs(tmp_path, tiny_onnx, monkeypatch, built, host, warned):
    path = _int8_artifact(tmp_path, tiny_onnx, built)
    monkeypatch.setattr(machine, "host_cpu_class", lambda root=machine.LIVE: host)
    lines = []
    with predict.load(path, warn=lines.append):
        pass
    if warned is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("warning: a ") and warned in lines[0]
        assert "INT8 accuracy was measured on" in lines[0]


def test_fp32_artifacts_do_not_warn(tmp_path, tiny_onnx):
    art = build(tiny_onnx, "ort", "fp32", tmp_path / "a", log=lambda *a: None)
    assert art.manifest["cpu"] == {"class": machine.host_cpu_class(), "measured_on": machine.host_cpu_class()}
    assert artifact.cpu_mismatch(art, "some-other-class") is None


def _image(folder: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(folder / "x.png")
    return folder / "x.png"


def test_predict_prints_the_warning_on_stderr(tmp_path, tiny_onnx):
    other = "amx" if machine.host_cpu_class() != "amx" else "avx2"
    path = _int8_artifact(tmp_path, tiny_onnx, other)
    p = run_cli(["predict", path, _image(tmp_path), "--top-k", "1"])
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("warning:") == 1 and f"CPU of class {other};" in p.stderr


def test_missing_model_file_is_named_with_exit_2(tmp_path, tiny_onnx):
    art = build(tiny_onnx, "ort", "fp32", tmp_path / "a", log=lambda *a: None)
    (art.path / "model.onnx").unlink()
    p = run_cli(["predict", art.path, _image(tmp_path)])
    assert_clean_error(p.returncode, p.stdout, p.stderr, 2, "lacks its model file model.onnx")


def test_build_records_the_class_named_by_cpu_and_the_host_it_was_scored_on(tmp_path, tiny_onnx):
    p = run_cli(["build", tiny_onnx, "--target", "ort", "--precision", "fp32", "--cpu", "amx", "-o", tmp_path / "a"])
    assert p.returncode == 0, p.stderr
    cpu = json.loads((tmp_path / "a" / "manifest.json").read_text())["cpu"]
    assert cpu == {"class": "amx", "measured_on": machine.host_cpu_class()}
    p = run_cli(["build", tiny_onnx, "--target", "ort", "--precision", "int8", "--cpu", "avx3", "-o", tmp_path / "b"])
    assert_clean_error(p.returncode, p.stdout, p.stderr, 2)
    assert "known: avx2, avx512, avx512-vnni, avx-vnni, amx" in p.stderr and not (tmp_path / "b").exists()


def test_doctor_says_inexact_for_int8_without_vnni(tmp_path):
    pytest.importorskip("nncf")
    (tmp_path / "proc").mkdir()
    shutil.copy(next(p for p in RECORDED if p.stem.startswith("avx2-")), tmp_path / "proc" / "cpuinfo")
    rows = {(r.target, r.precision): r for r in doctor.diagnose(root=tmp_path).rows}
    assert rows["ort", "int8"].status == "inexact" and "saturate at 16 bits" in rows["ort", "int8"].note
    assert rows["ort", "int8"].runs and rows["ort", "fp32"].status == "yes"
    (tmp_path / "proc" / "cpuinfo").write_text(next(p for p in RECORDED if p.stem.startswith("amx-")).read_text())
    assert {r.status for r in doctor.diagnose(root=tmp_path).rows if r.precision == "int8" and r.target != "trt"} \
        == {"yes"}


def test_bench_records_an_artifact_scored_on_another_class(tmp_path, tiny_onnx):
    from wae_deploy.benchmark.suite import BenchConfig, run

    other = "amx" if machine.host_cpu_class() != "amx" else "avx2"
    path = _int8_artifact(tmp_path, tiny_onnx, other)
    lines = []
    results = run(BenchConfig(targets=["ort"], models=[str(path)], batches=[1], accuracy=False, min_time_s=0.01,
                              min_iters=2, max_time_s=1, workdir=tmp_path / "work"), log=lines.append)
    assert [m["model"] for m in results["cpu_mismatch"]] == ["a"]
    assert f"CPU of class {other}; this host's class is" in results["cpu_mismatch"][0]["warning"]
    assert sum(f"CPU of class {other};" in line for line in lines) == 1
