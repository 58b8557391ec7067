"""What machine and software a result was measured on, and whether two results are comparable.

    env = fingerprint(threads=2)                 # recorded with every result
    compare_fingerprints(recorded_env, env)      # [] or ["cpu.model: 'A' (recorded) vs 'B' (current)", ...]
    with Tegrastats() as ts: ...run...           # on a Jetson: power, temperatures, throttling
    ts.summary()

Everything here reads files and package metadata or runs small vendor tools with a timeout;
nothing imports a runtime (importing torch or TensorRT takes seconds and may fail, which a
fingerprint must not). Missing information is None, never an exception.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")

# Distribution names per package: GPU and vendor builds publish under other names.
PACKAGES = {
    "torch": ("torch",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "openvino": ("openvino",),
    "nncf": ("nncf",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-lean"),
    "pycuda": ("pycuda",),
    "numpy": ("numpy",),
    "wae-deploy": ("wae-deploy",),
}

# Which packages decide the speed and accuracy of a target's results (nncf makes the INT8 models).
TARGET_PACKAGES = {"ort": ("onnxruntime", "nncf"), "openvino": ("openvino", "nncf"),
                   "trt": ("tensorrt",), "torch": ("torch",)}

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
JETSON_RELEASE = Path("/etc/nv_tegra_release")


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    """stdout of a tool, or None when it is missing, fails or hangs."""
    if not shutil.which(cmd[0]):
        return None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def package_version(name: str) -> str | None:
    for dist in PACKAGES.get(name, (name,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (all processors share model and flags)."""
    fields: dict[str, str] = {}
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def core_counts() -> dict[str, int | None]:
    """Physical cores (distinct sibling sets among online CPUs), logical CPUs, CPUs this process may use."""
    siblings = set()
    for topo in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/thread_siblings_list"):
        online = _read(topo.parent.parent / "online")
        if online in (None, "1"):  # cpu0 has no 'online' file; Jetson power modes switch cores off
            siblings.add(_read(topo))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"physical": len(siblings) or None, "logical": os.cpu_count(), "usable": usable}


def _cpu() -> dict:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    model = info.get("model name") or info.get("Model") or platform.processor() or None
    return {"model": model, "arch": platform.machine(), "flags": {f: f in flags for f in ISA_FLAGS},
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
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            distro = line.split("=", 1)[1].strip('"')
    return {"system": platform.system(), "kernel": platform.release(), "distro": distro}


def _gpu() -> dict | None:
    q = "name,driver_version,compute_cap,memory.total"
    out = _run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits"])
    if out is None:  # older drivers do not know compute_cap
        q = "name,driver_version,memory.total"
        out = _run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits"])
    rows = [[c.strip() for c in line.split(",")] for line in (out or "").splitlines() if line.strip()]
    cuda = _cuda_toolkit()
    if rows:
        gpu = dict(zip(q.replace(".", "_").split(","), rows[0]))
        header = _run(["nvidia-smi"]) or ""
        m = re.search(r"CUDA Version:\s*([\d.]+)", header)
        return {"name": gpu.get("name"), "driver": gpu.get("driver_version"), "cuda_driver": m and m.group(1),
                "compute_capability": gpu.get("compute_cap"), "memory_mb": gpu.get("memory_total"),
                "count": len(rows), "cuda_toolkit": cuda}
    if JETSON_RELEASE.exists():  # integrated GPU, often without nvidia-smi: the board names it
        return {"name": _read("/proc/device-tree/model"), "driver": _l4t_release(), "cuda_driver": None,
                "compute_capability": None, "memory_mb": None, "count": 1, "cuda_toolkit": cuda}
    return None


def _cuda_toolkit() -> str | None:
    text = _read("/usr/local/cuda/version.json")
    if text:
        try:
            return json.loads(text)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            pass
    m = re.search(r"([\d.]+)", _read("/usr/local/cuda/version.txt") or "")
    return m.group(1) if m else None


def _l4t_release() -> str | None:
    """'# R36 (release), REVISION: 3.0, ...' -> 'R36.3.0'."""
    text = _read(JETSON_RELEASE) or ""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else (text.splitlines()[0] if text else None)


def parse_nvpmodel(text: str) -> dict:
    """`nvpmodel -q` -> {'name': 'MAXN', 'id': 0}."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    ids = [line.strip() for line in text.splitlines() if line.strip().isdigit()]
    return {"name": m.group(1) if m else None, "id": int(ids[0]) if ids else None}


def parse_jetson_clocks(text: str) -> bool | None:
    """`jetson_clocks --show` -> whether clocks are pinned: jetson_clocks sets MinFreq to MaxFreq.

    Looks at every online CPU and the GPU; None when the output has no frequency lines.
    """
    pinned = []
    for line in text.splitlines():
        m = re.search(r"MinFreq=(\d+)\s+MaxFreq=(\d+)", line)
        if not m or "Online=0" in line or line.startswith("EMC"):
            continue
        pinned.append(m.group(1) == m.group(2))
    return all(pinned) if pinned else None


def _jetson() -> dict | None:
    if not JETSON_RELEASE.exists():
        return None
    nvp = _run(["nvpmodel", "-q"])
    clocks = _run(["jetson_clocks", "--show"])  # needs root; None otherwise
    mode = parse_nvpmodel(nvp) if nvp else {"name": None, "id": None}
    return {"model": _read("/proc/device-tree/model"), "l4t": _l4t_release(), "power_mode": mode["name"],
            "power_mode_id": mode["id"], "jetson_clocks": parse_jetson_clocks(clocks) if clocks else None}


def fingerprint(threads: int | None = None) -> dict:
    """The machine and software, as a JSON-ready dict. `threads`: the runtime threads the bench uses."""
    return {"cpu": _cpu(), "threads": _threads(threads), "os": _os(),
            "python": platform.python_version(),
            "packages": {name: package_version(name) for name in PACKAGES},
            "gpu": _gpu(), "jetson": _jetson()}


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
