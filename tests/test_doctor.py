"""`wae-deploy doctor`: right on this machine, never crashing, and right on faked machines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from wae_deploy.cli import main
from wae_deploy.runtime import backends, doctor, machine
from wae_deploy.runtime.doctor import (
    TargetState,
    cpu_info,
    diagnose,
    gpu_info,
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
        assert r["status"] in ("yes", "slow", "inexact", "no")
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
    expected = 0 if row["status"] in ("yes", "slow", "inexact") else 1
    assert _run("doctor", "--target", "openvino:int8").exit_code == expected
    assert _run("doctor", "--target", "torch:int8").exit_code == 1  # the torch reference has no int8


@pytest.mark.parametrize("bad", ["tflite", "ort:fp8"])
def test_unknown_target_is_one_line_exit_2(bad):
    r = _run("doctor", "--target", bad)
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:")


@pytest.mark.parametrize("error", [ImportError("no module"), AttributeError("no class"), RuntimeError("boom")])
def test_broken_target_module_never_crashes(monkeypatch, error):
    from wae_deploy.runtime import backends

    def broken(name):
        raise error

    monkeypatch.setattr(backends, "get_backend", broken)
    rep = diagnose(["ort"])
    ort = rep.targets["ort"]
    if isinstance(error, RuntimeError):  # the check itself failed: said so, not raised
        assert not ort.ok and "boom" in ort.reason
    else:  # the module is missing: the runtime package is checked instead
        assert ort.ok and ort.checked == "package" and ort.version
    assert len(rep.rows) >= len(backends.NAMES)


def test_broken_available_never_crashes(monkeypatch):
    from wae_deploy.runtime import backends

    class Weird:
        precisions = ("fp32",)

        def available(self):
            raise OSError("driver exploded")

    monkeypatch.setattr(backends, "get_backend", lambda name: Weird())
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


def test_memory_is_memtotal_or_a_smaller_cgroup_limit(tmp_path):
    assert machine.memory_bytes(tmp_path) is None
    _write(tmp_path, "proc/meminfo", "MemTotal:       24562344 kB\nHugePages_Total:       0\n")
    assert machine.memory_bytes(tmp_path) == 24562344 * 1024
    _write(tmp_path, "sys/fs/cgroup/memory.max", "max\n")  # cgroup v2 without a limit
    _write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n")  # v1, none either
    assert machine.memory_bytes(tmp_path) == 24562344 * 1024
    _write(tmp_path, "sys/fs/cgroup/memory.max", "4294967296\n")
    assert machine.memory_bytes(tmp_path) == 4294967296


def test_cpu_rows_without_vnni_or_bf16(tmp_path):
    _write(tmp_path, "proc/cpuinfo", "flags : avx2\n")
    cpu = cpu_info(tmp_path)
    ov = TargetState("openvino", True, "2026.0", "", "", ("fp32", "fp16", "bf16", "int8"), "target")
    rows = {p: precision_row(ov, p, cpu, {}) for p in ov.precisions}
    assert rows["fp32"].status == "yes"
    assert rows["fp16"].status == "yes" and "runs as f32/bf16 on CPU" in rows["fp16"].note
    assert rows["bf16"].status == "no" and rows["bf16"].fix.startswith("cannot work here")
    assert "avx512_bf16 or AMX" in rows["bf16"].fix
    assert rows["int8"].status == "inexact" and "without VNNI" in rows["int8"].note  # 16-bit saturating sums
    _write(tmp_path, "proc/cpuinfo", "flags : sse4_2\n")  # an x86 older than AVX2: no class, slow
    row = precision_row(ov, "int8", cpu_info(tmp_path), {})
    assert row.status == "slow" and "no VNNI/AMX" in row.note


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
    ("6.2", "10.3.0.30", True), ("6.1", "10.3.0", True), ("6.2", "10.7.0", False),
    ("6.0", "8.6.2", False), ("6.0", "10.3.0", False),       # JetPack 6.0 ships TensorRT 8.6, below 10.3
    ("7.0", "10.13.3", True), ("7.0", "10.3.0", False),
    ("7.1", "11.4.1", False), ("7.2.2", "11.4.1", True), ("7.3", "11.4.1", True),   # TensorRT 11: JetPack 7.2.2+
    ("7", "11.4.1", True),                                  # JetPack 7 from the L4T release alone: cannot tell
    ("5.1", "8.5.2", False), (None, "10.7.0", True), ("6.2", None, True),
])
def test_trt_jetpack_pairing(jetpack, trt, ok):
    problem = trt_pairing(jetpack, trt)
    assert (problem is None) == ok, problem
    if not ok:
        assert "JetPack" in problem and "TensorRT" in problem


def _jetson_root(root: Path, release: str, cpus: dict, dpkg: str = "") -> Path:
    """A recorded Jetson: nv_tegra_release, board, nvpmodel state, and per-CPU cpufreq files."""
    _write(root, "etc/nv_tegra_release", f"# R{release.split('.')[0]} (release), REVISION: "
                                         f"{release.split('.', 1)[1]}, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    _write(root, "proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit\x00")
    _write(root, "var/lib/nvpmodel/status", "pmode:0002 fmode:fanNull\n")
    if dpkg:
        _write(root, "var/lib/dpkg/status", dpkg)
    for cpu, (lo, hi, hw_max) in cpus.items():
        for name, value in (("scaling_min_freq", lo), ("scaling_max_freq", hi), ("cpuinfo_max_freq", hw_max)):
            _write(root, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/{name}", f"{value}\n")
    return root


PINNED_MAXN = {0: (2201600, 2201600, 2201600), 1: (2201600, 2201600, 2201600)}


def test_jetson(tmp_path):
    root = _jetson_root(tmp_path, "36.4.3", PINNED_MAXN)
    j = machine.jetson(root)
    assert j["jetpack"] == "6.2" and j["l4t"] == "R36.4.3" and j["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert j["power_mode_id"] == 2 and j["jetson_clocks"] is True
    _write(tmp_path, "sys/devices/system/cpu/cpu1/cpufreq/scaling_min_freq", "729600\n")
    assert machine.jetson(root)["jetson_clocks"] is False
    g = gpu_info(root, j)
    assert g["present"] and g["integrated"]
    # TensorRT not installed on a Jetson: JetPack's packages, not pip
    t = target_state("trt", g, j)
    if not t.ok and "not installed" in t.reason:
        assert "JetPack 6.2 (TensorRT 10.3)" in t.fix and "apt" in t.fix
    lines = doctor.header_lines(doctor.Report([], {}, cpu_info(root), g, dict(j, jetson_clocks=True)))
    assert any("JetPack 6.2 (TensorRT 10.3)" in ln and "power mode id 2" in ln and "jetson_clocks on" in ln
               for ln in lines)


def test_jetpack_60_pairs_tensorrt_86(tmp_path):
    j = machine.jetson(_jetson_root(tmp_path, "36.3.0", PINNED_MAXN))
    assert j["jetpack"] == "6.0" and machine.jetpack_trt(j["jetpack"]) == "8.6"
    problem = trt_pairing(j["jetpack"], "10.3.0")
    assert "JetPack 6.0 ships TensorRT 8.6" in problem and "6.1 or later" in problem
    lines = doctor.header_lines(doctor.Report([], {}, cpu_info(tmp_path), gpu_info(tmp_path, j), j))
    assert any("JetPack 6.0 (TensorRT 8.6)" in ln for ln in lines)


def test_jetpack_package_decides_the_minor_release(tmp_path):
    """JetPack 7's minor release is not in nv_tegra_release; the nvidia-jetpack package says it."""
    dpkg = ("Package: nvidia-jetpack-core\nStatus: install ok installed\nVersion: 7.1+b12\n\n"
            "Package: nvidia-jetpack\nStatus: install ok installed\nArchitecture: arm64\nVersion: {v}+b40\n")
    old = machine.jetson(_jetson_root(tmp_path / "a", "38.2.0", PINNED_MAXN, dpkg.format(v="7.1")))
    new = machine.jetson(_jetson_root(tmp_path / "b", "38.2.0", PINNED_MAXN, dpkg.format(v="7.2.2")))
    assert (old["jetpack"], new["jetpack"]) == ("7.1", "7.2.2")
    assert "needs JetPack 7.2.2 or later" in trt_pairing(old["jetpack"], "11.4.1")
    assert trt_pairing(new["jetpack"], "11.4.1") is None
    assert machine.jetson(_jetson_root(tmp_path / "c", "38.2.0", PINNED_MAXN))["jetpack"] == "7.0"   # L4T alone
    assert machine.jetson(_jetson_root(tmp_path / "d", "39.2.0", PINNED_MAXN))["jetpack"] == "7"     # minor unknown


def test_capped_power_mode_with_jetson_clocks_reads_on(tmp_path):
    """A 30 W mode caps scaling_max_freq below cpuinfo_max_freq; jetson_clocks pins the minimum to that cap."""
    capped = {0: (1497600, 1497600, 2201600), 1: (1497600, 1497600, 2201600)}
    assert machine.jetson(_jetson_root(tmp_path, "36.4.3", capped))["jetson_clocks"] is True
    unpinned = {0: (729600, 1497600, 2201600), 1: (1497600, 1497600, 2201600)}
    assert machine.jetson(_jetson_root(tmp_path, "36.4.3", unpinned))["jetson_clocks"] is False
    _write(tmp_path, "sys/devices/system/cpu/cpu0/online", "0\n")      # the power mode switched cpu0 off
    assert machine.jetson(tmp_path)["jetson_clocks"] is True


GPU_BOX = {"present": True, "cuda_driver": True, "why_not": "", "gpus": []}


def test_trt_needs_compute_capability_7(tmp_path):
    pascal = dict(GPU_BOX, gpus=[{"name": "Tesla P4", "compute_capability": "6.1"}])
    t = target_state("trt", pascal, None)
    assert not t.ok and "compute capability 6.1" in t.reason and "7.0 or higher" in t.reason
    assert t.fix.startswith("cannot work here")
    volta = target_state("trt", dict(GPU_BOX, gpus=[{"name": "Tesla V100", "compute_capability": "7.0"}]), None)
    assert "compute capability" not in volta.reason


def test_trt_int8_row_needs_nncf(monkeypatch):
    trt = TargetState("trt", True, "TensorRT 10.3.0 on Orin (sm 8.7, 16 SMs)", "", "", ("fp32", "fp16", "int8"),
                      "target")
    real = doctor._find_spec
    assert precision_row(trt, "int8", {}, GPU_BOX).status == ("yes" if real("nncf") else "no")
    monkeypatch.setattr(doctor, "_find_spec", lambda name: None if name == "nncf" else real(name))
    row = precision_row(trt, "int8", {}, GPU_BOX)
    assert row.status == "no" and "NNCF" in row.note and row.fix == "pip install 'wae-deploy[trt]'"
    assert precision_row(trt, "fp16", {}, GPU_BOX).status == "yes"


def test_cuda_python_is_not_taken_for_pycuda(monkeypatch):
    """TensorRT installed, cuda-python (module `cuda`) installed, pycuda not: not ready, and pycuda is the fix."""
    monkeypatch.setattr(doctor, "package_state", lambda name: (True, "10.3.0", ""))

    class NoPycuda:
        def available(self):
            return False, "pycuda is not usable (No module named 'pycuda')"

    monkeypatch.setattr(backends, "get_backend", lambda name: NoPycuda())
    monkeypatch.setattr(doctor, "_find_spec", lambda name: object() if name == "cuda" else None)
    t = target_state("trt", GPU_BOX, None)
    assert not t.ok and "cuda-python does not replace it" in t.reason
    assert t.fix == doctor.INSTALL_PYCUDA


def test_jetson_clocks_show():
    on = ("cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600\n"
          "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\nNV Power Mode: MAXN\n")
    off = on.replace("GPU MinFreq=1300500000", "GPU MinFreq=306000000")
    assert machine.parse_jetson_clocks(on) is True and machine.parse_jetson_clocks(off) is False
    assert machine.parse_jetson_clocks("") is None
