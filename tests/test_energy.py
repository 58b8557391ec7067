"""Module energy, clocks and throttling without a Jetson: recorded sysfs trees (tests/data/sysfs) whose
values a test thread changes while a cell is timed.

- the INA3221 is found by name, whatever its hwmon number; unconnected and summing channels are skipped;
- on a known power trace, energy per inference is exact to 1% (idle power taken off, per model, per rail);
- a recorded throttling trace marks the cell, and the gate refuses it unless allowed;
- RAPL's counter wraps at max_energy_range_uj;
- an unreadable file or no meter at all: no energy figures and one line, never a failed bench.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from wae_deploy.benchmark import gate, report
from wae_deploy.benchmark import results as R
from wae_deploy.benchmark.energy import Monitor
from wae_deploy.runtime.clocks import clock_domains, thermal_zones
from wae_deploy.runtime.latency import measure_interleaved
from wae_deploy.runtime.power import find_meter, ina3221_channels

DATA = Path(__file__).parent / "data" / "sysfs"
HWMON = "sys/class/hwmon/hwmon1"


@pytest.fixture
def orin(tmp_path) -> Path:
    return Path(shutil.copytree(DATA / "orin-nx", tmp_path / "orin"))


def put(root: Path, rel: str, value) -> int:
    """Write a value as the kernel would show it, in one step (a reader never sees half a file);
    returns when it was written, on the clock calls are timed with."""
    path = root / rel
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)
    return time.perf_counter_ns()


def set_watts(root: Path, channel: int, watts: float, mv: int = 5000) -> int:
    put(root, f"{HWMON}/in{channel}_input", mv)
    return put(root, f"{HWMON}/curr{channel}_input", round(watts / mv * 1e6))


def sleeper(seconds: float):
    return lambda: time.sleep(seconds)


# ----------------------------------------------------------------------------- finding things

def test_the_ina3221_is_found_by_name_whatever_its_hwmon_number(orin):
    rails = [c.rail for c in ina3221_channels(orin)]
    assert rails == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]   # not in7 (sum of shunts), not the fan
    (orin / HWMON).rename(orin / "sys/class/hwmon/hwmon7")      # another boot
    meter, why = find_meter(orin)
    assert why is None and meter.rails == rails and meter.module_rail == "VDD_IN" and meter.scope == "module"


def test_clock_domains_and_throttling_trip_points_of_an_orin(orin):
    domains = {d.name: d for d in clock_domains(orin)}
    assert set(domains) == {"gpu", "cpu.policy0", "cpu.policy4", "emc"}        # not the VIC's devfreq
    assert all(d.locked for d in domains.values())
    assert domains["gpu"].max_hz == 918_000_000 and domains["cpu.policy0"].read_hz() == 1_984_000_000
    zones = {z.name: z for z in thermal_zones(orin)}
    assert set(zones) == {"cpu-thermal", "gpu-thermal", "tj-thermal"}          # PMIC's constant 100 C left out
    assert zones["cpu-thermal"].trips == [(99.0, "passive"), (104.5, "critical")]  # a fan stage is no throttling
    put(orin, "sys/class/devfreq/17000000.gpu/min_freq", 306_000_000)          # the governor free again
    assert not {d.name: d for d in clock_domains(orin)}["gpu"].locked


# ----------------------------------------------------------------------------- energy on a known trace

def test_energy_per_inference_on_a_known_power_trace(orin):
    """Idle 5 W on VDD_IN; 12 W while the models run, 14 W from a moment the test thread picks."""
    lines = []
    mon = Monitor.open(orin, lines.append, hz=200, idle_s=0.3)
    assert lines == [] and mon.idle_w["VDD_IN"] == pytest.approx(5.0)
    set_watts(orin, 1, 12.0)
    set_watts(orin, 3, 2.5)             # VDD_SOC: 1.5 W idle, 2.5 W busy, steady
    switched = {}

    def device():
        time.sleep(0.3)
        switched["t"] = set_watts(orin, 1, 14.0)

    batch = 2
    with mon.cell() as sampler:
        thread = threading.Thread(target=device)
        thread.start()
        stats = measure_interleaved({"a": sleeper(0.004), "b": sleeper(0.008)}, batch=batch, warmup_iters=1,
                                    warmup_s=0.0, min_iters=5, min_time_s=0.6)
        thread.join()
    cell, energy = mon.account(sampler, stats, batch)

    def expected_mj(windows, before_w, after_w, idle_w):
        joules = 0.0
        for a, b in windows:
            cut = min(max(switched["t"], a), b)
            joules += ((before_w - idle_w) * (cut - a) + (after_w - idle_w) * (b - cut)) / 1e9
        return 1e3 * joules

    for name, s in stats.items():
        inferences = s.iters * batch
        assert energy[name]["mj_per_inference"] == pytest.approx(
            expected_mj(s.windows_ns, 12.0, 14.0, 5.0) / inferences, rel=0.01)
        soc = energy[name]["rails"]["VDD_SOC"]
        assert soc["mj_per_inference"] == pytest.approx(expected_mj(s.windows_ns, 2.5, 2.5, 1.5) / inferences,
                                                        rel=0.01)
        assert soc["mean_w"] == pytest.approx(2.5, rel=0.01) and energy[name]["scope"] == "module"
    assert 12.0 < cell["power"]["mean_w"] < 14.0 and not cell["throttled"] and cell["samples"] > 20
    assert mon.summary()["idle_w"]["module"] == pytest.approx(5.0) and mon.summary()["module_rail"] == "VDD_IN"


# ----------------------------------------------------------------------------- throttling

def replay(root: Path, trace: Path) -> None:
    """The recorded episode, at its own pace: GPU clock and cpu-thermal temperature."""
    start = time.perf_counter()
    for line in trace.read_text().splitlines():
        if line.startswith("#"):
            continue
        t, gpu_hz, cpu_mc = line.split(",")
        time.sleep(max(0.0, float(t) - (time.perf_counter() - start)))
        put(root, "sys/class/devfreq/17000000.gpu/cur_freq", gpu_hz)
        put(root, "sys/class/thermal/thermal_zone0/temp", cpu_mc)


def timed_cell(mon: Monitor, root: Path, trace: Path | None = None) -> tuple[dict, dict]:
    with mon.cell() as sampler:
        thread = threading.Thread(target=replay, args=(root, trace)) if trace else None
        if thread:
            thread.start()
        stats = measure_interleaved({"wae": sleeper(0.002), "base": sleeper(0.004)}, warmup_iters=1, warmup_s=0.0,
                                    min_iters=3, min_time_s=0.3)
        if thread:
            thread.join()   # the episode ends inside the cell: the reading after timing sees its end
    cell, energy = mon.account(sampler, stats, 1)
    return cell, {name: R.make_entry(model=name, target="trt", precision="fp16", batch=1, latency=s,
                                     baseline="base" if name == "wae" else None, energy=energy.get(name),
                                     throttled=cell["throttled"]) for name, s in stats.items()}


def bench_results(entries: dict) -> dict:
    return R.new_results({}, {"name": "test"}, entries=list(entries.values()))


def test_a_throttling_trace_marks_the_cell_and_the_gate_refuses_it(orin):
    mon = Monitor.open(orin, print, hz=200, idle_s=0.0)
    steady, steady_entries = timed_cell(mon, orin)
    assert not steady["throttled"] and steady["clocks"]["gpu"]["low_mhz"] == 918
    assert steady["temperature_c"]["cpu-thermal"]["max"] == 45.0     # over the fan's trip point: no throttling
    hot, hot_entries = timed_cell(mon, orin, DATA / "orin-nx-throttle.csv")
    assert hot["throttled"] and all(e["throttled"] for e in hot_entries.values())
    reasons = " / ".join(hot["throttle_reasons"])
    assert "gpu clock fell to 612 MHz, under 90% of its locked 918 MHz" in reasons
    assert "cpu-thermal reached 99.8 C, its passive trip point at 99.0 C" in reasons
    assert hot["temperature_c"]["cpu-thermal"]["before"] == 45.0

    recorded, current = bench_results(steady_entries), bench_results(hot_entries)
    refused = gate.compare(current, recorded)
    assert refused.exit_code == 2 and "--allow-throttled" in refused.refused
    assert "current: wae trt fp16 b1, base trt fp16 b1" in refused.refused
    assert gate.compare(recorded, current).exit_code == 2           # a throttled baseline is no baseline
    allowed = gate.compare(current, recorded, max_slowdown=10.0, allow_throttled=True)
    assert allowed.refused is None and any(c.name == "throttled" and c.ok for c in allowed.checks)
    current["cells"] = [{"target": "trt", "precision": "fp16", "batch": 1, **hot}]
    text = report.markdown(current)
    assert "(throttled)" in text and "cpu-thermal reached 99.8 C" in text and "| cpu-thermal 99.8 C |" in text


def test_the_cli_has_allow_throttled():
    from wae_deploy.cli.bench import bench

    assert "--allow-throttled" in {o for p in bench.params for o in p.opts}


# ----------------------------------------------------------------------------- RAPL

def test_rapl_counts_packages_across_the_wrap(tmp_path):
    root = Path(shutil.copytree(DATA / "x86-rapl", tmp_path / "x86"))
    meter, why = find_meter(root)
    assert why is None and meter.kind == "rapl" and meter.scope == "package"
    assert meter.rails == ["package-0", "package-1"]                 # the core sub-zone lies inside package-0
    assert meter.read(0.0) == {"package-0": 0.0, "package-1": 0.0}
    put(root, "sys/class/powercap/intel-rapl:0/energy_uj", 500_000)  # wrapped past 262143328850
    put(root, "sys/class/powercap/intel-rapl:1/energy_uj", 3_000_000)
    assert meter.read(1.0) == pytest.approx({"package-0": 0.82885, "package-1": 2.0})
    put(root, "sys/class/powercap/intel-rapl:0/energy_uj", 1_500_000)
    assert meter.read(2.0)["package-0"] == pytest.approx(1.82885)


def test_an_x86_running_under_its_maximum_clock_is_not_throttled(tmp_path):
    """Turbo limits keep a busy x86 core under scaling_max_freq, and unset trip points read 0 C."""
    root = DATA / "x86-rapl"
    (cpu,) = clock_domains(root)
    assert cpu.name == "cpu.policy0" and not cpu.locked          # min == max, but not a Jetson
    (pkg,) = thermal_zones(root)
    assert pkg.name == "x86_pkg_temp" and pkg.trips == []
    mon = Monitor.open(root, print, idle_s=0.0)
    cell, _ = timed_cell(mon, root)
    assert not cell["throttled"] and cell["clocks"]["cpu.policy0"]["low_mhz"] == 3200


# ----------------------------------------------------------------------------- nothing to read

def test_an_unreadable_hwmon_file_gives_no_energy_and_one_line(orin):
    os.remove(orin / HWMON / "curr2_input")
    (orin / HWMON / "curr2_input").mkdir()      # unreadable even for root, unlike a chmod
    lines = []
    mon = Monitor.open(orin, lines.append, idle_s=0.2)
    assert len(lines) == 1 and "energy not measured" in lines[0] and "curr2_input" in lines[0]
    cell, energy = timed_cell(mon, orin)
    assert "power" not in cell and all(e["energy"] is None for e in energy.values())
    assert mon.summary() is None and len(lines) == 1
    assert report.columns(bench_results(energy)) == report.COLUMNS       # no energy column


def test_a_meter_that_fails_while_timing_gives_one_line_for_the_run(orin):
    lines = []
    mon = Monitor.open(orin, lines.append, hz=200, idle_s=0.1)
    assert lines == []
    os.remove(orin / HWMON / "in1_input")
    for _ in range(2):
        cell, entries = timed_cell(mon, orin)
        assert "power" not in cell and all(e["energy"] is None for e in entries.values())
    assert len(lines) == 1 and "stopped being readable" in lines[0]


def relu_onnx(path: Path) -> None:
    """The smallest model ONNX Runtime times: the bench around it is what these tests are about."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, path)


def test_no_meter_at_all_is_one_line_and_a_bench_that_runs(tmp_path, monkeypatch):
    """A whole bench on a machine with neither INA3221 nor RAPL: it runs, with no energy column."""
    from wae_deploy.benchmark import suite

    monkeypatch.setattr(suite, "measure_peaks", lambda *a, **k: {})   # not what this test is about
    relu_onnx(tmp_path / "tiny.onnx")
    lines = []
    out = suite.run(suite.BenchConfig(targets=["ort"], models=[str(tmp_path / "tiny.onnx")], batches=[1],
                                      min_time_s=0.05, min_iters=3, workdir=tmp_path / "work", threads=1,
                                      sysfs=tmp_path / "empty", idle_s=0.5), log=lines.append)
    assert [line for line in lines if "energy" in line] == [
        "energy not measured: no INA3221 power monitor (hwmon) or RAPL package counter (powercap) here"]
    assert out["power"] is None and out["cells"] == [] and out["entries"][0]["energy"] is None
    assert report.columns(out) == report.COLUMNS and "Module energy" not in report.markdown(out)
    R.save(out, tmp_path / "results.json")


def test_a_bench_on_the_orin_tree_records_energy_and_cells(orin, tmp_path, monkeypatch):
    from wae_deploy.benchmark import suite

    monkeypatch.setattr(suite, "measure_peaks", lambda *a, **k: {})
    relu_onnx(tmp_path / "tiny.onnx")
    set_watts(orin, 1, 9.0)   # busy before timing starts: idle is read as 9 W and nothing is added
    out = suite.run(suite.BenchConfig(targets=["ort"], models=[str(tmp_path / "tiny.onnx")], batches=[1, 2],
                                      min_time_s=0.05, min_iters=3, workdir=tmp_path / "work", threads=1,
                                      sysfs=orin, idle_s=0.1), log=lambda *_: None)
    assert out["power"]["source"] == "ina3221" and out["power"]["idle_w"]["module"] == pytest.approx(9.0)
    assert [(c["target"], c["batch"], c["throttled"]) for c in out["cells"]] == [("ort", 1, False), ("ort", 2, False)]
    for e in out["entries"]:
        assert e["throttled"] is False and abs(e["energy"]["mj_per_inference"]) < 1e-6
        assert e["energy"]["mean_w"] == pytest.approx(9.0)   # VDD_IN feeds the module: the rails are not added
    assert report.columns(out)[-2:] == report.ENERGY_COLUMNS and "Module energy" in report.markdown(out)
    R.load(R.save(out, tmp_path / "results.json"))
