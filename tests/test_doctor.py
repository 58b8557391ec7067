"""`wae-deploy doctor`: right on this machine, never crashing, and right on faked machines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from wae_deploy import doctor
from wae_deploy.cli import main
from wae_deploy.doctor import (
    TargetState,
    clocks_from_show,
    cpu_info,
    diagnose,
    gpu_info,
    jetson_info,
    precision_row,
    target_state,
    trt_pairing,
)


def _run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def report():
    r = _run("doctor", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _trt_really_here(report) -> bool:
    return report["targets"]["trt"]["ok"]


def test_table_on_this_machine():
    r = _run("doctor")
    assert r.exit_code == 0, r.output  # nothing asked for: always 0
    for word in ("torch", "ort", "openvino", "trt", "fp32", "int8", "CPU:", "VNNI", "AMX", "BF16"):
        assert word in r.stdout
    assert "Traceback" not in r.output


def test_json_says_ort_and_openvino_ready_trt_not(report):
    t = report["targets"]
    assert t["ort"]["ok"] and t["ort"]["version"]
    assert t["openvino"]["ok"] and t["openvino"]["version"]
    assert t["torch"]["ok"]
    if _trt_really_here(report):
        pytest.skip("TensorRT and a GPU are present on this machine")
    assert not t["trt"]["ok"] and t["trt"]["reason"] and t["trt"]["fix"]
    if not report["gpu"]["present"]:
        assert "no NVIDIA GPU" in t["trt"]["reason"] and t["trt"]["fix"].startswith("cannot work here")
    rows = [r for r in report["rows"] if r["target"] == "trt"]
    assert rows and all(r["status"] == "no" and r["note"] for r in rows)
    # every row names what it is, and every "no" says why
    for r in report["rows"]:
        assert r["status"] in ("yes", "slow", "no")
        assert r["status"] == "yes" or r["note"]


def test_openvino_fp16_on_cpu_is_said_to_run_as_f32(report):
    (row,) = [r for r in report["rows"] if r["target"] == "openvino" and r["precision"] == "fp16"]
    assert "fp16 weights, runs as f32/bf16 on CPU" in row["note"]


def test_exit_codes_for_asked_targets(report):
    assert _run("doctor", "--target", "ort").exit_code == 0
    assert _run("doctor", "--target", "onnxruntime", "--target", "openvino").exit_code == 0
    r = _run("doctor", "--target", "trt")
    if _trt_really_here(report):
        assert r.exit_code == 0
    else:
        assert r.exit_code == 1
        assert "not ready: trt" in r.stdout
    r = _run("doctor", "--target", "ort", "--target", "trt", "--json")
    data = json.loads(r.stdout)
    assert r.exit_code == data["exit_code"] == (0 if _trt_really_here(report) else 1)
    assert data["asked"] == ["ort", "trt"]


def test_target_with_precision(report):
    row = next(r for r in report["rows"] if r["target"] == "openvino" and r["precision"] == "int8")
    expected = 0 if row["status"] in ("yes", "slow") else 1
    assert _run("doctor", "--target", "openvino:int8").exit_code == expected
    assert _run("doctor", "--target", "torch:int8").exit_code == 1  # the torch reference has no int8


@pytest.mark.parametrize("bad", ["tflite", "ort:fp8"])
def test_unknown_target_is_one_line_exit_2(bad):
    r = _run("doctor", "--target", bad)
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:")


@pytest.mark.parametrize("error", [ImportError("no module"), AttributeError("no class"), RuntimeError("boom")])
def test_broken_target_module_never_crashes(monkeypatch, error):
    import wae_deploy.targets as targets

    def broken(name):
        raise error

    monkeypatch.setattr(targets, "get_target", broken)
    rep = diagnose(["ort"])
    ort = rep.targets["ort"]
    if isinstance(error, RuntimeError):  # the check itself failed: said so, not raised
        assert not ort.ok and "boom" in ort.reason
    else:  # the module is missing: the runtime package is checked instead
        assert ort.ok and ort.checked == "package" and ort.version
    assert len(rep.rows) >= len(doctor.TARGETS)


def test_broken_available_never_crashes(monkeypatch):
    import wae_deploy.targets as targets

    class Weird:
        precisions = ("fp32",)

        def available(self):
            raise OSError("driver exploded")

    monkeypatch.setattr(targets, "get_target", lambda name: Weird())
    rep = diagnose()
    assert all(not t.ok and "driver exploded" in t.reason for t in rep.targets.values())
    assert rep.exit_code == 0  # nothing asked for


def test_missing_package_gives_install_command(monkeypatch):
    real = doctor._find_spec
    monkeypatch.setattr(doctor, "_find_spec", lambda name: None if name == "openvino" else real(name))
    ok, reason, fix = doctor.package_state("openvino")
    assert not ok and "not installed" in reason and fix == "pip install 'wae-deploy[openvino]'"


# ----------------------------------------------------------------- faked machines (root=folder)

def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_cpu_features_from_cpuinfo(tmp_path):
    _write(tmp_path, "proc/cpuinfo", "model name\t: Old Xeon\nflags\t\t: fpu sse avx2 avx512f\n")
    old = cpu_info(tmp_path)
    assert old["model"] == "Old Xeon" and old["avx512"] and not old["int8_fast"] and not old["bf16_native"]
    _write(tmp_path, "proc/cpuinfo", "flags : avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16\n")
    spr = cpu_info(tmp_path)
    assert spr["vnni"] == ["avx512_vnni"] and spr["amx"] == ["amx_bf16", "amx_int8", "amx_tile"]
    assert spr["int8_fast"] and spr["bf16_native"] and spr["avx512_bf16"]
    _write(tmp_path, "proc/cpuinfo", "Features\t: fp asimd asimddp\n")
    arm = cpu_info(tmp_path)
    assert arm["int8_fast"] and arm["arm_int8"] == ["asimddp"] and not arm["bf16_native"]


def test_cpu_rows_without_vnni_or_bf16(tmp_path):
    _write(tmp_path, "proc/cpuinfo", "flags : avx2\n")
    cpu = cpu_info(tmp_path)
    ov = TargetState("openvino", True, "2026.0", "", "", ("fp32", "fp16", "bf16", "int8"), "target")
    rows = {p: precision_row(ov, p, cpu, {}) for p in ov.precisions}
    assert rows["fp32"].status == "yes"
    assert rows["fp16"].status == "yes" and "runs as f32/bf16 on CPU" in rows["fp16"].note
    assert rows["bf16"].status == "no" and rows["bf16"].fix.startswith("cannot work here")
    assert "avx512_bf16 or AMX" in rows["bf16"].fix
    assert rows["int8"].status == "slow" and "no VNNI/AMX" in rows["int8"].note


def test_unreadable_machine_does_not_crash(tmp_path):
    rep = diagnose(root=tmp_path)  # no /proc/cpuinfo, no devices, nothing
    assert rep.rows and rep.cpu["flags_read"] is False and rep.jetson is None and not rep.gpu["present"]
    assert not rep.targets["trt"].ok


def test_gpu_box(tmp_path):
    _write(tmp_path, "dev/nvidia0", "")
    _write(tmp_path, "proc/driver/nvidia/version",
           "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build\n")
    _write(tmp_path, "usr/lib/x86_64-linux-gnu/libcuda.so.1", "")
    g = gpu_info(tmp_path)
    assert g["present"] and g["cuda_driver"] and g["driver_version"] == "570.86.15" and not g["why_not"]
    none = gpu_info(tmp_path / "empty")
    assert not none["present"] and "no /dev/nvidia0" in none["why_not"] and "no libcuda" in none["why_not"]


def test_trt_without_gpu_cannot_work_here():
    no_gpu = {"present": False, "cuda_driver": False, "why_not": "no /dev/nvidia0, no libcuda"}
    t = target_state("trt", no_gpu, None)
    if t.ok:
        pytest.skip("TensorRT reports ready here")
    assert "no NVIDIA GPU / no CUDA driver" in t.reason
    assert t.fix.startswith("cannot work here") and "pip install 'wae-deploy[trt]'" in t.fix


@pytest.mark.parametrize("jetpack, trt, ok", [
    (6, "10.3.0.30", True), (6, "10.7.0", False), (7, "10.13.3", True), (7, "11.0.0", True),
    (7, "10.3.0", False), (5, "8.5.2", False), (None, "10.7.0", True), (6, None, True),
])
def test_trt_jetpack_pairing(jetpack, trt, ok):
    problem = trt_pairing(jetpack, trt)
    assert (problem is None) == ok
    if not ok:
        assert "JetPack" in problem and "TensorRT" in problem


def test_jetson(tmp_path):
    _write(tmp_path, "etc/nv_tegra_release",
           "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8\n")
    _write(tmp_path, "proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit\x00")
    _write(tmp_path, "var/lib/nvpmodel/status", "pmode:0000 fmode:fanNull\n")
    for cpu in range(2):
        _write(tmp_path, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_min_freq", "2201600\n")
        _write(tmp_path, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq", "2201600\n")
    j = jetson_info(tmp_path)
    assert j["jetpack"] == 6 and j["l4t"] == "R36.4.3" and j["board"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert j["power_mode"] == "id 0" and j["jetson_clocks"] == "on"
    _write(tmp_path, "sys/devices/system/cpu/cpu1/cpufreq/scaling_min_freq", "729600\n")
    assert jetson_info(tmp_path)["jetson_clocks"] == "off"
    g = gpu_info(tmp_path, j)
    assert g["present"] and g["integrated"]
    # TensorRT not installed on a Jetson: JetPack's packages, not pip
    t = target_state("trt", g, j)
    if not t.ok and "not installed" in t.reason:
        assert "JetPack 6 (TensorRT 10.3)" in t.fix and "apt" in t.fix
    j_on = dict(j, jetson_clocks="on")
    lines = doctor.header_lines(doctor.Report([], {}, cpu_info(tmp_path), g, j_on))
    assert any("JetPack 6 (TensorRT 10.3)" in ln and "power mode id 0" in ln and "jetson_clocks on" in ln
               for ln in lines)


def test_clocks_from_show():
    on = ("cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600\n"
          "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\nNV Power Mode: MAXN\n")
    off = on.replace("GPU MinFreq=1300500000", "GPU MinFreq=306000000")
    assert clocks_from_show(on) == "on" and clocks_from_show(off) == "off" and clocks_from_show("") == "unknown"
