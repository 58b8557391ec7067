"""Facts about this machine: CPU features, memory, the NVIDIA GPU and driver, the Jetson release, power mode, clocks.

The one owner of these facts: `doctor`, the bench fingerprint (bench/environment.py), the OpenVINO
target and training (cpu_has) all read them here. Parsers take the text of a file or of a tool's
output; readers take a root folder, "/" on the live machine or a folder of recorded files in tests.
Vendor tools (nvidia-smi, nvpmodel, jetson_clocks) only run when the root is the live "/".
Nothing here imports a runtime or raises: what cannot be read is None (or empty).
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

LIVE = Path("/")

# Importable package -> the distributions that provide it (GPU and vendor builds publish under other names).
DISTRIBUTIONS = {
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


def package_version(name: str) -> str | None:
    """The installed version of a package (any of its distributions), from metadata only: nothing is imported."""
    for dist in DISTRIBUTIONS.get(name, (name,)):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError, ValueError):
            return importlib.metadata.version(dist)
    return None


def read(root: Path, rel: str) -> str:
    """A file's text under root ('' when missing or unreadable); device-tree strings end in NUL."""
    try:
        return (Path(root) / rel).read_text(errors="replace").replace("\x00", "")
    except OSError:
        return ""


def run_tool(cmd: list[str], timeout: float = 5.0) -> str | None:
    """stdout of a short vendor tool, or None when it is missing, fails or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return p.stdout if p.returncode == 0 else None


def version_tuple(v: str | None) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0); 'R36.4.3' -> (36, 4, 3); () when there is no number."""
    return tuple(int(x) for x in re.findall(r"\d+", v or "")[:3])


# ---------------------------------------------------------------- CPU

def parse_cpuinfo(text: str) -> dict:
    """/proc/cpuinfo -> {'model': str | None, 'flags': set}: x86 'flags', Arm 'Features', all processors'."""
    flags: set[str] = set()
    model = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags |= set(value.split())
        elif key in ("model name", "hardware", "cpu model", "model") and not model and not value.strip().isdigit():
            model = value.strip() or None
    return {"model": model, "flags": flags}


def cpu_flags(root: Path = LIVE) -> set[str]:
    return parse_cpuinfo(read(root, "proc/cpuinfo"))["flags"]


def cpu_has(flag: str, root: Path = LIVE) -> bool:
    return flag in cpu_flags(root)


def cpu_features(flags: set[str]) -> dict:
    """The features that decide INT8 and BF16 speed on a CPU."""
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni", "avx_vnni_int8"})
    amx = sorted(f for f in flags if f.startswith("amx_"))
    arm_int8 = sorted(flags & {"asimddp", "i8mm"})
    return {"avx512": "avx512f" in flags, "vnni": vnni, "amx": amx, "avx512_bf16": "avx512_bf16" in flags,
            "arm_int8": arm_int8, "int8_fast": bool(vnni or "amx_int8" in flags or arm_int8),
            "bf16_native": bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}),   # "bf16": Armv8.6
            "flags_read": bool(flags)}


# The x86 instruction classes that decide how INT8 runs, in the order they are told apart. Without
# VNNI, u8 x s8 products are summed in pairs into 16 bits with saturation (vpmaddubsw): INT8 is
# both slower and inexact there, so builds quantize differently (convert.int8_policy.RECIPES).
CPU_CLASSES = ("avx2", "avx512", "avx512-vnni", "avx-vnni", "amx")


def cpu_class(flags: set[str]) -> str | None:
    """'amx', 'avx512-vnni', 'avx-vnni', 'avx512' or 'avx2' from /proc/cpuinfo flags; None: not known (no
    flags read, an x86 older than AVX2, or another architecture)."""
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return None


def host_cpu_class(root: Path = LIVE) -> str | None:
    return cpu_class(cpu_flags(root))



def online_cpus(root: Path = LIVE) -> list[Path]:
    """sysfs folders of the online CPUs (cpu0 has no 'online' file; Jetson power modes switch cores off)."""
    return [d for d in sorted((Path(root) / "sys/devices/system/cpu").glob("cpu[0-9]*"))
            if read(d, "online").strip() in ("", "1")]


# ---------------------------------------------------------------- Memory

def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo -> {field: bytes}."""
    fields = {}
    for m in re.finditer(r"^(\w+):\s+(\d+)( kB)?", text, re.M):
        fields[m.group(1)] = int(m.group(2)) * (1024 if m.group(3) else 1)
    return fields


def memory_bytes(root: Path = LIVE) -> int | None:
    """The memory this process may use: MemTotal, or a smaller cgroup limit (containers)."""
    total = parse_meminfo(read(root, "proc/meminfo")).get("MemTotal")
    limits = [read(root, rel).strip() for rel in ("sys/fs/cgroup/memory.max",
                                                   "sys/fs/cgroup/memory/memory.limit_in_bytes")]
    return min([int(v) for v in limits if v.isdigit()] + ([total] if total else []), default=None)


# ---------------------------------------------------------------- NVIDIA GPU

def parse_driver_version(text: str) -> str | None:
    """/proc/driver/nvidia/version -> '570.86.15'."""
    m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([0-9][0-9.]+)", text)
    return m.group(1) if m else None


GPU_QUERY = ("name", "compute_cap", "driver_version", "memory.total")


def parse_gpu_query(text: str, fields: tuple[str, ...] = GPU_QUERY) -> list[dict]:
    """`nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits` -> one dict per GPU."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == len(fields) and cells[0]:
            rows.append(dict(zip(fields, cells)))
    return rows


def nvidia_gpus(root: Path = LIVE) -> list[dict]:
    """The GPUs nvidia-smi lists (live machine only): name, compute_cap, driver_version, memory.total."""
    if Path(root) != LIVE:
        return []
    out = run_tool(["nvidia-smi", f"--query-gpu={','.join(GPU_QUERY)}", "--format=csv,noheader,nounits"])
    if out is None:           # older drivers do not know compute_cap
        fields = tuple(f for f in GPU_QUERY if f != "compute_cap")
        out = run_tool(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
        return [dict(g, compute_cap=None) for g in parse_gpu_query(out or "", fields)]
    return parse_gpu_query(out)


def libcuda(root: Path = LIVE) -> str | None:
    if Path(root) == LIVE:
        with contextlib.suppress(Exception):
            found = ctypes.util.find_library("cuda")
            if found:
                return found
    for d in ("usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu/tegra",
              "usr/lib64", "usr/lib", "usr/lib/wsl/lib"):
        with contextlib.suppress(OSError):
            hits = sorted((Path(root) / d).glob("libcuda.so*"))
            if hits:
                return str(hits[0])
    return None


def gpu_device_node(root: Path = LIVE) -> bool:
    return any((Path(root) / n).exists() for n in ("dev/nvidia0", "dev/nvgpu", "dev/nvhost-gpu"))


# ---------------------------------------------------------------- Jetson

def parse_l4t(text: str) -> str | None:
    """/etc/nv_tegra_release: '# R36 (release), REVISION: 4.3, ...' -> 'R36.4.3'."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def parse_dpkg_version(status: str, package: str) -> str | None:
    """The version of an installed package from /var/lib/dpkg/status."""
    for block in status.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", block, re.M) and re.search(r"^Status: .*installed$",
                                                                                      block, re.M):
            m = re.search(r"^Version: (\S+)", block, re.M)
            return m.group(1) if m else None
    return None


# Jetson Linux (L4T) release -> JetPack, for boards without the nvidia-jetpack package; first match wins.
# R36.3 is JetPack 6.0, R36.4 is 6.1, R36.4.3 and later 6.2; R38.2 is 7.0, R38.4 is 7.1 (NVIDIA's JetPack
# archive pages); later 7.x releases are told apart by the nvidia-jetpack package only.
L4T_JETPACK = (((39,), "7"), ((38, 5), "7"), ((38, 4), "7.1"), ((38, 2), "7.0"), ((38,), "7"), ((36, 4, 3), "6.2"),
               ((36, 4), "6.1"), ((36,), "6.0"), ((35,), "5.1"), ((34,), "5.0"), ((32,), "4"))


def jetpack_of(l4t: str | None, jetpack_package: str | None = None) -> str | None:
    """JetPack release: the nvidia-jetpack package's version ('6.2+b77' -> '6.2'), else from the L4T release."""
    if jetpack_package:
        return jetpack_package.split("+")[0].split("-")[0]
    v = version_tuple(l4t)
    return next((jp for since, jp in L4T_JETPACK if v[:len(since)] >= since and v[0] == since[0]), None) if v else None


# The TensorRT each JetPack ships (JetPack's own packages; TensorRT on a Jetson does not come from pip).
# TensorRT 11 (11.4.1, the SBSA build) supports JetPack 7.2.2 or later only.
JETPACK_TRT = (((7, 2, 2), "10.13+ or 11"), ((7,), "10.13"), ((6, 1), "10.3"), ((6, 0), "8.6"), ((5,), "8.5"),
               ((4,), "8.2 or older"))


def jetpack_trt(jetpack: str | None) -> str | None:
    v = version_tuple(jetpack)
    return next((trt for since, trt in JETPACK_TRT if v >= since), None) if v else None


def parse_nvpmodel(text: str) -> dict:
    """`nvpmodel -q` -> {'name': 'MAXN', 'id': 0}."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    ids = [line.strip() for line in text.splitlines() if line.strip().isdigit()]
    return {"name": m.group(1) if m else None, "id": int(ids[0]) if ids else None}


def parse_jetson_clocks(text: str) -> bool | None:
    """`jetson_clocks --show` -> whether clocks are pinned: jetson_clocks sets MinFreq to MaxFreq.

    Every online CPU and the GPU count (EMC lines do not); None when there are no frequency lines.
    """
    pinned = []
    for line in text.splitlines():
        m = re.search(r"MinFreq=(\d+)\s+MaxFreq=(\d+)", line)
        if not m or "Online=0" in line or line.startswith("EMC"):
            continue
        pinned.append(m.group(1) == m.group(2))
    return all(pinned) if pinned else None


def clocks_from_sysfs(root: Path = LIVE) -> bool | None:
    """Without root: jetson_clocks pins each online CPU's scaling_min_freq to the power mode's scaling_max_freq.

    Not cpuinfo_max_freq: a capped power mode (15 W, 30 W) lowers scaling_max_freq, and jetson_clocks
    pins to that cap.
    """
    pinned = []
    for cpu in online_cpus(root):
        lo, hi = read(cpu, "cpufreq/scaling_min_freq").strip(), read(cpu, "cpufreq/scaling_max_freq").strip()
        if lo and hi:
            pinned.append(lo == hi)
    return all(pinned) if pinned else None


def jetson(root: Path = LIVE) -> dict | None:
    """On a Jetson: board, L4T and JetPack release, power mode and whether jetson_clocks is on; else None."""
    release = read(root, "etc/nv_tegra_release")
    if not release and not (Path(root) / "etc/nv_tegra_release").exists():
        return None
    l4t = parse_l4t(release)
    live = Path(root) == LIVE
    mode = parse_nvpmodel(run_tool(["nvpmodel", "-q"]) or "") if live else {"name": None, "id": None}
    if mode["id"] is None:     # nvpmodel keeps its state here, readable without root
        st = re.search(r"pmode:(\d+)", read(root, "var/lib/nvpmodel/status"))
        mode["id"] = int(st.group(1)) if st else None
    shown = run_tool(["jetson_clocks", "--show"]) if live else None     # needs root: None otherwise
    clocks = parse_jetson_clocks(shown) if shown else None
    return {"model": read(root, "proc/device-tree/model").strip() or None, "l4t": l4t,
            "jetpack": jetpack_of(l4t, parse_dpkg_version(read(root, "var/lib/dpkg/status"), "nvidia-jetpack")),
            "power_mode": mode["name"], "power_mode_id": mode["id"],
            "jetson_clocks": clocks if clocks is not None else clocks_from_sysfs(root)}
