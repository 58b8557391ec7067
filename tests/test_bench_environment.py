"""Environment fingerprint, comparability, and the Jetson tools' output parsers."""

import json
import sys

from wae_deploy.benchmark import environment as E
from wae_deploy.runtime import machine

TEGRA_ORIN = ("11-25-2024 10:00:00 RAM 2874/62841MB (lfb 13758x4MB) SWAP 0/31421MB (cached 0MB) "
              "CPU [10%@2201,5%@2201,off,off] GR3D_FREQ {load}%@[{mhz},{mhz}] cpu@{t}C soc2@41.093C "
              "gpu@40.937C tj@{t}C CV0@-256C VDD_GPU_SOC {p}mW/{p}mW VDD_CPU_CV 400mW/400mW VDD_IN {p}mW/{p}mW")
TEGRA_NANO = ("RAM 1234/3964MB (lfb 123x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
              "CPU [6%@102,3%@102,2%@102,2%@102] EMC_FREQ 3%@1600 GR3D_FREQ 99%@921 APE 25 PLL@27C CPU@30.5C "
              "PMIC@100C GPU@28C AO@36C thermal@29.25C POM_5V_IN 1012/1012 POM_5V_GPU 0/0 POM_5V_CPU 124/124")


def test_fingerprint_runs_here_and_has_the_fields():
    env = E.fingerprint(threads=2)
    json.dumps(env)  # JSON-ready
    assert set(env) >= {"cpu", "threads", "os", "python", "packages", "gpu", "jetson"}
    assert set(env["cpu"]["flags"]) == set(E.ISA_FLAGS)
    assert env["cpu"]["logical_cores"] >= 1 and env["cpu"]["usable_cores"] >= 1
    assert env["cpu"]["physical_cores"] is None or env["cpu"]["physical_cores"] >= 1
    assert set(env["packages"]) >= {"torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "pycuda"}
    assert env["packages"]["onnxruntime"]  # installed in the dev environment
    assert env["threads"]["bench"] == 2 and "OMP_NUM_THREADS" in env["threads"]
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))


def test_fingerprint_does_not_import_runtimes():
    # a fresh interpreter: the fingerprint itself must not pay for torch or TensorRT
    import subprocess

    code = ("import sys; from wae_deploy.benchmark.environment import fingerprint; fingerprint(); "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'nncf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _env(**changes):
    env = {"cpu": {"model": "X", "arch": "x86_64", "flags": {"avx2": True, "avx512f": False},
                   "physical_cores": 2, "usable_cores": 2},
           "threads": {"OMP_NUM_THREADS": None, "bench": 2},
           "packages": {"onnxruntime": "1.20", "openvino": "2025.0", "nncf": "2.16", "torch": "2.6"},
           "gpu": None, "jetson": None}
    for path, value in changes.items():
        section, field = path.split("__")
        env[section] = dict(env[section] or {}, **{field: value})
    return env


def test_compare_fingerprints():
    assert E.compare_fingerprints(_env(), _env()) == []
    assert E.compare_fingerprints(_env(), _env(packages__torch="2.7")) == [
        "packages.torch: '2.6' (recorded) vs '2.7' (current)"]
    # torch is not a runtime of the ort target: its version does not matter there
    assert E.compare_fingerprints(_env(), _env(packages__torch="2.7"), targets={"ort"}) == []
    diff = E.compare_fingerprints(_env(), _env(cpu__model="Y", jetson__power_mode="15W"), targets={"ort"})
    assert diff == ["cpu.model: 'X' (recorded) vs 'Y' (current)",
                    "jetson.power_mode: None (recorded) vs '15W' (current)"]
    assert E.compare_fingerprints(_env(), _env(packages__openvino="2026.0"), targets={"ort"}) == []
    assert len(E.compare_fingerprints(_env(), _env(packages__openvino="2026.0"), targets={"openvino"})) == 1


def test_nvpmodel_and_jetson_clocks_parsers():
    assert machine.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert machine.parse_nvpmodel("garbage") == {"name": None, "id": None}
    show = ("SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin\nOnline CPUs: 0-11\n"
            "cpu0: Online=1 Governor=schedutil MinFreq={c} MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=1\n"
            "cpu8: Online=0 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=729600\n"
            "GPU MinFreq={g} MaxFreq=1300500000 CurrentFreq=1300500000\n"
            "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1\n")
    assert machine.parse_jetson_clocks(show.format(c=2201600, g=1300500000)) is True
    assert machine.parse_jetson_clocks(show.format(c=729600, g=1300500000)) is False
    assert machine.parse_jetson_clocks("nothing here") is None


def test_tegrastats_parse_and_summary():
    lines = [TEGRA_ORIN.format(load=99, mhz=1300, t=50.0, p=20000),
             TEGRA_ORIN.format(load=98, mhz=1300, t=60.5, p=30000)]
    s = E.summarize_tegrastats(lines)
    assert s["samples"] == 2 and s["total_rail"] == "VDD_IN"
    assert s["power_mw"]["VDD_IN"] == {"mean": 25000, "max": 30000}
    assert s["temperature_c_max"]["tj"] == 60.5 and "CV0" not in s["temperature_c_max"]  # -256C: absent sensor
    assert s["gpu_mhz"] == [1300, 1300] and s["cpu_mhz"] == [2201, 2201]
    assert s["throttling_suspected"] is False
    throttled = E.summarize_tegrastats(lines + [TEGRA_ORIN.format(load=99, mhz=900, t=96.0, p=30000)])
    assert throttled["throttling_suspected"] is True and len(throttled["throttling_reasons"]) == 2
    old = E.parse_tegrastats_line(TEGRA_NANO)
    assert old["power_mw"] == {"POM_5V_IN": 1012, "POM_5V_GPU": 0, "POM_5V_CPU": 124}
    assert "PMIC" not in old["temp_c"] and old["temp_c"]["GPU"] == 28.0
    assert old["gpu_load"] == 99 and old["gpu_mhz"] == 921
    assert E.summarize_tegrastats([]) is None


def test_tegrastats_context_manager_with_a_stand_in(tmp_path):
    script = tmp_path / "fake_tegrastats.py"
    line = TEGRA_ORIN.format(load=90, mhz=1000, t=45.0, p=10000)
    script.write_text(f"import sys, time\nfor _ in range(3):\n    print({line!r}, flush=True)\ntime.sleep(30)\n")
    import time

    with E.Tegrastats(command=[sys.executable, str(script)]) as ts:
        deadline = time.monotonic() + 20
        while len(ts.lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert ts.summary()["samples"] == 3 and ts._proc is None  # stopped on exit
    with E.Tegrastats(command=["no-such-tegrastats-here"]) as missing:
        pass
    assert missing.summary() is None
