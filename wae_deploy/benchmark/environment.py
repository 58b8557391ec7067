"""What machine and software a result was measured on, and whether two results are comparable.

    env = fingerprint(threads=2)                 # recorded with every result
    compare_fingerprints(recorded_env, env)      # [] or ["cpu.model: 'A' (recorded) vs 'B' (current)", ...]
    with Tegrastats() as ts: ...run...           # on a Jetson: power, temperatures, throttling
    ts.summary()

The machine's facts come from machine.py (the parsers doctor uses too); nothing here
imports a runtime (importing torch or TensorRT takes seconds and may fail, which a
fingerprint must not). Missing information is None, never an exception.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading

from wae_deploy.runtime import machine

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")

# Which packages decide the speed and accuracy of a target's results (nncf makes the INT8 models).
TARGET_PACKAGES = {"ort": ("onnxruntime", "nncf"), "openvino": ("openvino", "nncf"),
                   "trt": ("tensorrt",), "torch": ("torch",)}

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def core_counts() -> dict[str, int | None]:
    """Physical cores (distinct sibling sets among online CPUs), logical CPUs, CPUs this process may use."""
    siblings = {machine.read(cpu, "topology/thread_siblings_list").strip() for cpu in machine.online_cpus()}
    siblings.discard("")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"physical": len(siblings) or None, "logical": os.cpu_count(), "usable": usable}


def _cpu() -> dict:
    info = machine.parse_cpuinfo(machine.read(machine.LIVE, "proc/cpuinfo"))
    return {"model": info["model"] or platform.processor() or None, "arch": platform.machine(),
            "class": machine.cpu_class(info["flags"]), "flags": {f: f in info["flags"] for f in ISA_FLAGS},
            **{f"{k}_cores": v for k, v in core_counts().items()}}


def _threads(threads: int | None) -> dict:
    out: dict = {v: os.environ.get(v) for v in THREAD_VARS}
    # torch's own count only when torch is already loaded: importing it here costs seconds
    torch = sys.modules.get("torch")
    out["torch"] = torch.get_num_threads() if torch is not None else None
    out["bench"] = threads
    return out


def _os() -> dict:
    distro = None
    for line in machine.read(machine.LIVE, "etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            distro = line.split("=", 1)[1].strip('"')
    return {"system": platform.system(), "kernel": platform.release(), "distro": distro}


def _gpu(jetson: dict | None) -> dict | None:
    cuda = _cuda_toolkit()
    gpus = machine.nvidia_gpus()
    if gpus:
        m = re.search(r"CUDA Version:\s*([\d.]+)", machine.run_tool(["nvidia-smi"]) or "")
        return {"name": gpus[0]["name"], "driver": gpus[0]["driver_version"], "cuda_driver": m and m.group(1),
                "compute_capability": gpus[0]["compute_cap"], "memory_mb": gpus[0]["memory.total"],
                "count": len(gpus), "cuda_toolkit": cuda}
    if jetson is not None:  # integrated GPU, often without nvidia-smi: the board names it
        return {"name": jetson["model"], "driver": jetson["l4t"], "cuda_driver": None,
                "compute_capability": None, "memory_mb": None, "count": 1, "cuda_toolkit": cuda}
    return None


def _cuda_toolkit() -> str | None:
    text = machine.read(machine.LIVE, "usr/local/cuda/version.json")
    if text:
        try:
            return json.loads(text)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            pass
    m = re.search(r"([\d.]+)", machine.read(machine.LIVE, "usr/local/cuda/version.txt"))
    return m.group(1) if m else None


def fingerprint(threads: int | None = None) -> dict:
    """The machine and software, as a JSON-ready dict. `threads`: the runtime threads the bench uses."""
    jetson = machine.jetson()
    return {"cpu": _cpu(), "threads": _threads(threads), "os": _os(),
            "python": platform.python_version(),
            "packages": {name: machine.package_version(name) for name in machine.DISTRIBUTIONS},
            "gpu": _gpu(jetson), "jetson": jetson}


def fingerprint_key(env: dict, targets: list[str] | tuple[str, ...] | set[str] | None = None) -> dict:
    """The fields that must match for two results to be comparable, flattened to 'a.b' names.

    Device (CPU model and ISA, GPU and driver), the cores and threads the runtimes got, the
    Jetson power set-up, and the versions of the runtimes that `targets` use (all runtimes
    when None): a new OpenVINO can change the speed; a new torch, which only exports, cannot.
    """
    env = env or {}
    cpu, thr = env.get("cpu") or {}, env.get("threads") or {}
    gpu, jet, pk = env.get("gpu") or {}, env.get("jetson") or {}, env.get("packages") or {}
    flags = cpu.get("flags") or {}
    key = {"cpu.model": cpu.get("model"), "cpu.arch": cpu.get("arch"),
           "cpu.isa": " ".join(sorted(f for f, on in flags.items() if on)),
           "cpu.physical_cores": cpu.get("physical_cores"), "cpu.usable_cores": cpu.get("usable_cores"),
           "threads.OMP_NUM_THREADS": thr.get("OMP_NUM_THREADS"), "threads.bench": thr.get("bench"),
           "gpu.name": gpu.get("name"), "gpu.driver": gpu.get("driver"),
           "jetson.power_mode": jet.get("power_mode"), "jetson.jetson_clocks": jet.get("jetson_clocks")}
    targets = TARGET_PACKAGES if targets is None else targets
    wanted = sorted({p for t in targets for p in TARGET_PACKAGES.get(t, ())})
    key.update({f"packages.{p}": pk.get(p) for p in wanted})
    return key


def compare_fingerprints(recorded: dict, current: dict, targets=None,
                         labels: tuple[str, str] = ("recorded", "current")) -> list[str]:
    """One line per comparable field that differs; [] when the results are comparable."""
    a, b = fingerprint_key(recorded, targets), fingerprint_key(current, targets)
    return [f"{k}: {a.get(k)!r} ({labels[0]}) vs {b.get(k)!r} ({labels[1]})"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# ---- tegrastats: power, temperatures and clocks during a run on a Jetson ----

_POWER = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW")  # JetPack 5+: 'VDD_IN 4752mW/4752mW'
_POWER_OLD = re.compile(r"\b((?:POM|VDD)_[A-Z0-9_]+) (\d+)/(\d+)\b")  # JetPack 4: 'POM_5V_IN 1012/1012'
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_GPU = re.compile(r"GR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_CPU = re.compile(r"CPU \[([^\]]*)\]")
_TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "VIN")
_FAKE_SENSORS = {"PMIC"}  # reports a constant 100C on several boards


def parse_tegrastats_line(line: str) -> dict:
    """One tegrastats line -> {'power_mw': {rail: now}, 'temp_c': {...}, 'gpu_load', 'gpu_mhz', 'cpu_mhz'}."""
    power = {m.group(1): int(m.group(2)) for m in _POWER.finditer(line)}
    if not power:
        power = {m.group(1): int(m.group(2)) for m in _POWER_OLD.finditer(line)}
    temps = {m.group(1): float(m.group(2)) for m in _TEMP.finditer(line)
             if m.group(1) not in _FAKE_SENSORS and float(m.group(2)) > -40}  # -256C: sensor absent
    g = _GPU.search(line)
    gpu_mhz = max(int(f) for f in g.group(2).split(",") if f) if g and g.group(2) else None
    c = _CPU.search(line)
    cpu_mhz = [int(x.split("@")[1]) for x in c.group(1).split(",") if "@" in x] if c else []
    return {"power_mw": power, "temp_c": temps, "gpu_load": int(g.group(1)) if g else None,
            "gpu_mhz": gpu_mhz, "cpu_mhz": max(cpu_mhz) if cpu_mhz else None}


def summarize_tegrastats(lines: list[str], hot_c: float = 95.0) -> dict | None:
    """Mean and max power per rail, max temperature per sensor, clock ranges, and a throttling flag.

    Throttling is *suspected* when the GPU clock fell below 90% of its highest value while the
    GPU was busy (load >= 50%), or a sensor reached `hot_c`; with jetson_clocks on, clocks are
    pinned and any such drop is the thermal or power limiter.
    """
    samples = [parse_tegrastats_line(line) for line in lines if line.strip()]
    if not samples:
        return None
    rails = sorted({r for s in samples for r in s["power_mw"]})
    power = {r: {"mean": sum(v) / len(v), "max": max(v)}
             for r in rails if (v := [s["power_mw"][r] for s in samples if r in s["power_mw"]])}
    sensors = sorted({t for s in samples for t in s["temp_c"]})
    temps = {t: max(s["temp_c"][t] for s in samples if t in s["temp_c"]) for t in sensors}
    busy = [s["gpu_mhz"] for s in samples if s["gpu_mhz"] and (s["gpu_load"] or 0) >= 50]
    all_gpu = [s["gpu_mhz"] for s in samples if s["gpu_mhz"]]
    cpu = [s["cpu_mhz"] for s in samples if s["cpu_mhz"]]
    reasons = []
    if busy and min(busy) < 0.9 * max(all_gpu):
        reasons.append(f"GPU clock fell to {min(busy)} MHz (max {max(all_gpu)}) while busy")
    hot = [f"{t} {c:.1f}C" for t, c in temps.items() if c >= hot_c]
    if hot:
        reasons.append("hot: " + ", ".join(hot))
    total = next((r for r in _TOTAL_RAILS if r in power), None)
    loads = [s["gpu_load"] for s in samples if s["gpu_load"] is not None]
    return {"samples": len(samples), "power_mw": power, "total_rail": total,
            "total_power_mw_mean": power[total]["mean"] if total else None,
            "temperature_c_max": temps, "max_temperature_c": max(temps.values()) if temps else None,
            "gpu_load_pct_mean": sum(loads) / len(loads) if loads else None,
            "gpu_mhz": [min(all_gpu), max(all_gpu)] if all_gpu else None,
            "cpu_mhz": [min(cpu), max(cpu)] if cpu else None,
            "throttling_suspected": bool(reasons), "throttling_reasons": reasons}


class Tegrastats:
    """Runs `tegrastats --interval MS` in the background while the block runs; `.summary()` after.

    Does nothing where tegrastats is missing (summary() is then None), so callers need no
    Jetson check. `command` replaces the tool (tests feed recorded lines through it).
    """

    def __init__(self, interval_ms: int = 500, command: list[str] | None = None):
        self.command = command or ["tegrastats", "--interval", str(interval_ms)]
        self.lines: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> Tegrastats:
        cmd = list(self.command)
        if not shutil.which(cmd[0]):
            return self
        if shutil.which("stdbuf"):  # tegrastats writes to a pipe block-buffered: lines would arrive late
            cmd = ["stdbuf", "-oL", *cmd]
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return self
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def __exit__(self, *exc) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=5)
        self._proc = None

    def summary(self) -> dict | None:
        return summarize_tegrastats(self.lines)
