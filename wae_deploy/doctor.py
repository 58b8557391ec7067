"""`wae-deploy doctor`: what this machine can run, and for what it cannot, why and how to fix it.

For each target (torch, ort, openvino, trt) and precision: ready, slow (runs, without the
hardware that makes it fast) or no; the runtime version; for each "no" the reason and the
exact install command, or why installing would not help here (no NVIDIA GPU, a TensorRT
that does not pair with the JetPack, a CPU without BF16).

It asks each target module (`targets.get_target(name).available()`); where a module is
missing or broken it checks the runtime package itself. Nothing here may raise: every
probe of the machine is guarded, and a failed probe reads as "unknown", never as a crash.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .errors import UserError

TARGETS = ("torch", "ort", "openvino", "trt")
ALIASES = {"onnxruntime": "ort", "ov": "openvino", "tensorrt": "trt", "pytorch": "torch"}
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
CPU_TARGETS = ("torch", "ort", "openvino")
# Used when a target module is missing or does not say which precisions it builds.
DEFAULT_PRECISIONS = {"torch": ("fp32",), "ort": ("fp32", "int8"), "openvino": ("fp32", "fp16", "bf16", "int8"),
                      "trt": ("fp32", "fp16", "int8")}
INSTALL_CORE = "pip install wae-deploy"
INSTALL = {"torch": "pip install 'wae-deploy[train]'", "ort": INSTALL_CORE,
           "openvino": "pip install 'wae-deploy[openvino]'", "trt": "pip install 'wae-deploy[trt]'"}
JETSON_TRT_INSTALL = "sudo apt install nvidia-tensorrt python3-libnvinfer (and a venv made with --system-site-packages)"


@dataclass(frozen=True)
class Package:
    module: str
    dists: tuple[str, ...]   # distributions that provide the module, tried in order for the version


PACKAGES = {
    "torch": Package("torch", ("torch",)),
    "ort": Package("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")),
    "openvino": Package("openvino", ("openvino",)),
    "trt": Package("tensorrt", ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt_cu12")),
}


@dataclass
class Row:
    target: str
    precision: str
    status: str          # "yes" | "slow" | "no"
    version: str         # runtime version ("" when not installed)
    note: str            # the reason for "no"/"slow", or a caveat for "yes"
    fix: str = ""        # the exact install command, or "cannot work here: ..."

    @property
    def runs(self) -> bool:
        return self.status in ("yes", "slow")


@dataclass
class TargetState:
    name: str
    ok: bool
    version: str
    reason: str
    fix: str
    precisions: tuple[str, ...]
    checked: str         # "target" (the module's available()) or "package" (fallback)


@dataclass
class Report:
    rows: list[Row]
    targets: dict[str, TargetState]
    cpu: dict
    gpu: dict
    jetson: dict | None
    asked: list[str] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.not_ready else 0

    def to_dict(self) -> dict:
        return {"wae_deploy": __version__, "python": platform.python_version(),
                "platform": f"{platform.system()} {platform.machine()}", "cpu": self.cpu, "gpu": self.gpu,
                "jetson": self.jetson,
                "targets": {k: asdict(v) for k, v in self.targets.items()},
                "rows": [asdict(r) for r in self.rows],
                "asked": self.asked, "not_ready": self.not_ready, "ready": not self.not_ready,
                "exit_code": self.exit_code}


# ---------------------------------------------------------------------------------------------
# Probes of the machine. `root` lets tests fake a machine (a Jetson, a GPU box) in a folder.

def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    """stdout of a short command, or None when it is missing, fails or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return p.stdout if p.returncode == 0 else None


def cpu_info(root: Path = Path("/")) -> dict:
    """Model, cores and the features that decide INT8 and BF16 speed, from /proc/cpuinfo."""
    flags: set[str] = set()
    model = ""
    for line in _read(root / "proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):        # x86 "flags", Arm "Features"
            flags |= set(value.split())
        elif key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
    try:
        cores = len(os.sched_getaffinity(0)) if root == Path("/") else None
    except (AttributeError, OSError):
        cores = None
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni", "avx_vnni_int8"})
    amx = sorted(f for f in flags if f.startswith("amx_"))
    arm_int8 = sorted(flags & {"asimddp", "i8mm"})
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})  # "bf16": Armv8.6
    return {
        "model": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "cores": cores if cores is not None else os.cpu_count(),
        "avx512": "avx512f" in flags,
        "vnni": vnni,
        "amx": amx,
        "avx512_bf16": "avx512_bf16" in flags,
        "arm_int8": arm_int8,
        "int8_fast": bool(vnni or "amx_int8" in flags or arm_int8),
        "bf16_native": bool(bf16),
        "flags_read": bool(flags),
    }


def _libcuda(root: Path) -> str | None:
    if root == Path("/"):
        with contextlib.suppress(Exception):
            found = ctypes.util.find_library("cuda")
            if found:
                return found
    for d in ("usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu/tegra",
              "usr/lib64", "usr/lib", "usr/lib/wsl/lib"):
        with contextlib.suppress(OSError):
            hits = sorted((root / d).glob("libcuda.so*"))
            if hits:
                return str(hits[0])
    return None


def gpu_info(root: Path = Path("/"), jetson: dict | None = None) -> dict:
    """An NVIDIA GPU and its CUDA driver: device nodes, the kernel module, libcuda, nvidia-smi."""
    driver = ""
    m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([0-9][0-9.]+)", _read(root / "proc/driver/nvidia/version"))
    if m:
        driver = m.group(1)
    device = (root / "dev/nvidia0").exists() or (root / "dev/nvgpu").exists() or (root / "dev/nvhost-gpu").exists()
    libcuda = _libcuda(root)
    gpus = []
    if root == Path("/"):
        out = _run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"])
        for line in (out or "").splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 3 and parts[0]:
                gpus.append({"name": parts[0], "compute_capability": parts[1]})
                driver = driver or parts[2]
    present = bool(device or driver or gpus or (jetson is not None))
    missing = []
    if not (device or jetson):
        missing.append("no /dev/nvidia0")
    if not libcuda:
        missing.append("no libcuda")
    return {"present": present, "cuda_driver": bool(libcuda or driver), "driver_version": driver or None,
            "libcuda": libcuda, "gpus": gpus, "integrated": jetson is not None,
            "why_not": ", ".join(missing)}


L4T_TO_JETPACK = {32: 4, 34: 5, 35: 5, 36: 6, 38: 7}


def jetson_info(root: Path = Path("/")) -> dict | None:
    """On a Jetson: L4T and JetPack release, board, power mode (nvpmodel -q) and jetson_clocks."""
    release = root / "etc/nv_tegra_release"
    if not release.exists():
        return None
    text = _read(release)
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)", text)
    l4t_major = int(m.group(1)) if m else None
    jetpack = L4T_TO_JETPACK.get(l4t_major) if l4t_major is not None else None
    if jetpack is None and l4t_major is not None and l4t_major > 38:
        jetpack = 7
    board = _read(root / "proc/device-tree/model").strip("\x00\n ")
    info = {"l4t": f"R{l4t_major}.{m.group(2)}" if m else None, "jetpack": jetpack, "board": board or None,
            "power_mode": None, "jetson_clocks": "unknown"}
    is_live = root == Path("/")
    out = _run(["nvpmodel", "-q"]) if is_live else None
    if out:
        pm = re.search(r"NV Power Mode:\s*(.+)", out)
        ids = [ln.strip() for ln in out.splitlines() if ln.strip().isdigit()]
        if pm:
            info["power_mode"] = pm.group(1).strip() + (f" (id {ids[0]})" if ids else "")
    if info["power_mode"] is None:  # nvpmodel keeps its state here
        st = re.search(r"pmode:(\d+)", _read(root / "var/lib/nvpmodel/status"))
        if st:
            info["power_mode"] = f"id {int(st.group(1))}"
    shown = _run(["jetson_clocks", "--show"]) if is_live else None  # needs root; None otherwise
    if shown:
        info["jetson_clocks"] = clocks_from_show(shown)
        if info["power_mode"] is None:
            pm = re.search(r"NV Power Mode:\s*(.+)", shown)
            info["power_mode"] = pm.group(1).strip() if pm else None
    if info["jetson_clocks"] == "unknown":
        info["jetson_clocks"] = clocks_from_sysfs(root)
    return info


def clocks_from_show(text: str) -> str:
    """`jetson_clocks --show`: on when every CPU and the GPU run at MinFreq == MaxFreq."""
    pairs = re.findall(r"^(cpu\d+|GPU).*?MinFreq=(\d+)\s+MaxFreq=(\d+)", text, flags=re.M)
    if not pairs:
        return "unknown"
    return "on" if all(lo == hi for _, lo, hi in pairs) else "off"


def clocks_from_sysfs(root: Path) -> str:
    """Without root: the CPUs' minimum frequency pinned to their maximum means jetson_clocks is on."""
    pinned = []
    for d in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        lo, hi = _read(d / "scaling_min_freq").strip(), _read(d / "cpuinfo_max_freq").strip()
        if lo and hi:
            pinned.append(lo == hi)
    if not pinned:
        return "unknown (sudo jetson_clocks --show)"
    return "on" if all(pinned) else "off"


JETPACK_TRT = {5: "8.5", 6: "10.3", 7: "10.13+ or 11"}


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def trt_pairing(jetpack: int | None, trt_version: str | None) -> str | None:
    """Why this TensorRT does not pair with this JetPack, or None when it does (or cannot be told)."""
    if jetpack is None or not trt_version:
        return None
    v = _version_tuple(trt_version)
    if not v:
        return None
    if jetpack <= 5:
        return (f"JetPack {jetpack} ships TensorRT {JETPACK_TRT.get(jetpack, '8.x')}; wae-deploy needs TensorRT 10.3+: "
                "flash JetPack 6 (TensorRT 10.3) or 7")
    if jetpack == 6 and v[:2] != (10, 3):
        return f"TensorRT {trt_version} does not pair with JetPack 6, which ships TensorRT 10.3"
    if jetpack >= 7 and v < (10, 13):
        return f"TensorRT {trt_version} does not pair with JetPack 7, which ships TensorRT 10.13+ / 11"
    return None


# ---------------------------------------------------------------------------------------------
# Runtimes

def package_state(name: str) -> tuple[bool, str, str]:
    """(ok, version or reason, fix) from the runtime package itself, importing it to be sure."""
    pkg = PACKAGES[name]
    if _find_spec(pkg.module) is None:
        return False, f"{pkg.module} is not installed", INSTALL[name]
    try:
        mod = importlib.import_module(pkg.module)
    except Exception as e:  # noqa: BLE001 - a runtime whose libraries are missing fails in many ways
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return False, f"{pkg.module} is installed but does not import: {first}", INSTALL[name]
    version = None
    for dist in pkg.dists:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError, ValueError):
            version = importlib.metadata.version(dist)
            break
    return True, str(version or getattr(mod, "__version__", "") or "unknown version"), ""


def target_state(name: str, gpu: dict, jetson: dict | None) -> TargetState:
    pkg_ok, pkg_msg, pkg_fix = package_state(name)
    checked, precisions = "package", DEFAULT_PRECISIONS[name]
    ok, msg = pkg_ok, pkg_msg
    try:
        from .targets import get_target

        target = get_target(name)
        got = getattr(target, "precisions", None)
        if got:
            precisions = tuple(p for p in PRECISIONS if p in got) + tuple(p for p in got if p not in PRECISIONS)
        ok, msg = target.available()
        ok, msg, checked = bool(ok), str(msg), "target"
    except (ImportError, AttributeError, TypeError, ValueError):
        pass  # the target module is missing or incomplete: the package check above stands
    except Exception as e:  # noqa: BLE001 - a broken available() must not break doctor
        ok, msg, checked = False, f"the {name} target's check failed: {type(e).__name__}: {e}", "target"
    version = msg if ok else (pkg_msg if pkg_ok else "")
    reasons = [] if ok else [msg]
    fix = "" if ok else pkg_fix

    if name == "trt":
        cuda = pkg_ok and _cuda_bindings()
        if not ok and pkg_ok and not cuda:
            reasons.append("neither pycuda nor cuda-python is installed")
            fix = fix or ("pip install pycuda" if jetson is not None else INSTALL["trt"])
        if jetson is not None:
            problem = trt_pairing(jetson.get("jetpack"), pkg_msg if pkg_ok else None)
            if problem:
                ok = False
                reasons.append(problem)
                fix = f"cannot work here as installed: {problem}; use the TensorRT that JetPack ships"
            elif not pkg_ok:
                jp = jetson.get("jetpack")
                which = f" {jp} (TensorRT {JETPACK_TRT[jp]})" if jp in JETPACK_TRT else ""
                fix = f"TensorRT comes with JetPack{which}, not pip: {JETSON_TRT_INSTALL}"
        elif not gpu.get("present") or not gpu.get("cuda_driver"):
            why = gpu.get("why_not") or "no CUDA driver"
            reasons.insert(0, f"no NVIDIA GPU / no CUDA driver here ({why})")
            ok = False
            fix = (f"cannot work here: TensorRT needs an NVIDIA GPU and its driver (desktop or Jetson); "
                   f"on such a machine: {INSTALL['trt']}")
    reason = "; ".join(dict.fromkeys(r for r in reasons if r))
    return TargetState(name, ok, version if ok else (pkg_msg if pkg_ok else ""), reason, fix, precisions, checked)


def _cuda_bindings() -> bool:
    return _has("pycuda") or _has("cuda")


def _find_spec(module: str):
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def _has(module: str) -> bool:
    return _find_spec(module) is not None


def precision_row(t: TargetState, precision: str, cpu: dict, gpu: dict) -> Row:
    """One table row: does `precision` run on target `t` here, how well, and what to do if not."""
    version = t.version
    if not t.ok:
        return Row(t.name, precision, "no", version, t.reason, t.fix)
    if t.name == "trt":
        return _trt_row(t, precision, gpu)
    if precision == "fp32":
        note = "runs with the f32 hint (the CPU plugin's default here would be BF16)" \
            if t.name == "openvino" and cpu.get("bf16_native") else ""
        return Row(t.name, precision, "yes", version, note)
    if precision == "fp16":
        return Row(t.name, precision, "yes", version, "fp16 weights, runs as f32/bf16 on CPU")
    if precision == "bf16":
        if cpu.get("bf16_native"):
            have = ", ".join(f for f in ["avx512_bf16" if cpu.get("avx512_bf16") else ""] + cpu.get("amx", []) if f)
            return Row(t.name, precision, "yes", version, f"native BF16 ({have or 'bf16'})")
        return Row(t.name, precision, "no", version, "this CPU has neither AVX512-BF16 nor AMX: BF16 would be emulated",
                   "cannot work here: BF16 needs a CPU with avx512_bf16 or AMX (e.g. Xeon Sapphire Rapids, AMD Zen 4+)")
    if precision == "int8":
        if not _has("nncf"):
            return Row(t.name, precision, "no", version, "INT8 models are calibrated with NNCF, which is not installed",
                       INSTALL["openvino"])
        if cpu.get("int8_fast"):
            have = ", ".join(cpu.get("vnni", []) + [a for a in cpu.get("amx", []) if a == "amx_int8"]
                             + cpu.get("arm_int8", []))
            return Row(t.name, precision, "yes", version, f"fast INT8 ({have})")
        why = "cannot tell the CPU features" if not cpu.get("flags_read") else "no VNNI/AMX"
        return Row(t.name, precision, "slow", version, f"{why}: INT8 runs, but may be no faster than FP32",
                   "a CPU with VNNI (avx512_vnni/avx_vnni) or AMX makes INT8 fast")
    return Row(t.name, precision, "yes", version, "")


def _trt_row(t: TargetState, precision: str, gpu: dict) -> Row:
    major = (_version_tuple(t.version) or (0,))[0]
    ccs = [g.get("compute_capability") for g in gpu.get("gpus", []) if g.get("compute_capability")]
    ccs += re.findall(r"\bsm (\d+\.\d+)", t.version)  # the target says "TensorRT X on GPU (sm 8.7)"
    cc = max((_version_tuple(c) for c in ccs), default=())
    if precision == "fp16":
        note = "strongly typed in TensorRT 11: FP16 comes from an FP16-typed ONNX" if major >= 11 else ""
        if cc and cc < (7, 0):
            return Row(t.name, precision, "slow", t.version, f"compute capability {'.'.join(map(str, cc))}: "
                       "no tensor cores, FP16 may be no faster than FP32", "")
        return Row(t.name, precision, "yes", t.version, note)
    if precision == "int8":
        if cc and cc < (6, 1):
            return Row(t.name, precision, "no", t.version, f"compute capability {'.'.join(map(str, cc))} has no INT8",
                       "cannot work here: INT8 needs compute capability 6.1+")
        return Row(t.name, precision, "yes", t.version, "from Q/DQ nodes (explicit quantization)")
    return Row(t.name, precision, "yes", t.version, "")


# ---------------------------------------------------------------------------------------------

def parse_asked(asked: tuple[str, ...] | list[str]) -> list[tuple[str, str | None]]:
    """'ort', 'openvino:int8' -> [(target, precision or None)]; unknown names are a UserError."""
    out = []
    for item in asked:
        name, _, precision = item.strip().lower().partition(":")
        name = ALIASES.get(name, name)
        if name not in TARGETS:
            raise UserError(f"unknown target {item!r}; known: {', '.join(TARGETS)} (optionally :PRECISION)")
        if precision and precision not in PRECISIONS:
            raise UserError(f"unknown precision in {item!r}; known: {', '.join(PRECISIONS)}")
        out.append((name, precision or None))
    return out


def diagnose(asked: tuple[str, ...] | list[str] = (), root: Path = Path("/")) -> Report:
    wanted = parse_asked(asked)
    cpu = cpu_info(root)
    jetson = jetson_info(root)
    gpu = gpu_info(root, jetson)
    states = {name: target_state(name, gpu, jetson) for name in TARGETS}
    rows = [precision_row(states[n], p, cpu, gpu) for n in TARGETS for p in states[n].precisions]
    not_ready = []
    for name, precision in wanted:
        label = f"{name}:{precision}" if precision else name
        if precision is None:
            if not states[name].ok:
                not_ready.append(label)
            continue
        row = next((r for r in rows if r.target == name and r.precision == precision), None)
        if row is None or not row.runs:
            not_ready.append(label)
    return Report(rows, states, cpu, gpu, jetson, [a for a in asked], not_ready)


def header_lines(report: Report) -> list[str]:
    c, g, j = report.cpu, report.gpu, report.jetson

    def yn(x):
        return "yes" if x else "no"

    lines = [f"wae-deploy {__version__} · Python {platform.python_version()} · "
             f"{platform.system()} {platform.machine()}"]
    cpu = (f"CPU: {c['model']} ({c['cores']} cores) · AVX-512 {yn(c['avx512'])} · "
           f"VNNI {', '.join(c['vnni']) or 'no'} · AMX {', '.join(c['amx']) or 'no'} · "
           f"AVX-512 BF16 {yn(c['avx512_bf16'])}")
    if c["arm_int8"]:
        cpu += f" · Arm int8 dot product {', '.join(c['arm_int8'])}"
    cpu += f" -> INT8 {'fast' if c['int8_fast'] else 'slow'}, BF16 {'native' if c['bf16_native'] else 'not native'}"
    lines.append(cpu)
    if g["present"]:
        names = ", ".join(f"{x['name']} (sm {x['compute_capability']})" for x in g["gpus"]) or \
            ("integrated (Jetson)" if g["integrated"] else "NVIDIA GPU")
        lines.append(f"GPU: {names} · driver {g['driver_version'] or 'unknown'} · "
                     f"libcuda {'found' if g['libcuda'] else 'not found'}")
    else:
        lines.append(f"GPU: no NVIDIA GPU ({g['why_not'] or 'none found'})")
    if j is not None:
        lines.append(f"Jetson: {j['board'] or 'unknown board'} · L4T {j['l4t'] or '?'} · JetPack "
                     f"{j['jetpack'] or '?'} (TensorRT {JETPACK_TRT.get(j['jetpack'], '?')}) · power mode "
                     f"{j['power_mode'] or 'unknown (nvpmodel -q)'} · jetson_clocks {j['jetson_clocks']}")
    return lines


def render_table(report: Report):
    from rich.table import Table
    from rich.text import Text

    style = {"yes": "green", "slow": "yellow", "no": "red"}
    table = Table(title=Text("what this machine can run"))
    for col in ("target", "precision", "runs", "version", "note"):
        table.add_column(col)
    last = None
    for r in report.rows:
        same = last is not None and last.target == r.target
        note = "(as above)" if same and r.note and r.note == last.note and r.status != "yes" else r.note
        table.add_row(Text("" if same else r.target), Text(r.precision),
                      Text(r.status, style=style.get(r.status, "")), Text(r.version), Text(note))
        last = r
    return table


def footer_lines(report: Report) -> list[str]:
    """The fixes, one per distinct problem, unwrapped so they can be copied."""
    lines, seen = [], set()
    for r in report.rows:
        if r.status == "yes" or not r.fix or (r.target, r.fix) in seen:
            continue
        seen.add((r.target, r.fix))
        precisions = [x.precision for x in report.rows if x.target == r.target and x.fix == r.fix]
        lines.append(f"  {r.target} {'/'.join(precisions)}: {r.fix}")
    if lines:
        lines.insert(0, "to fix:")
    if report.asked:
        verdict = ("all ready" if not report.not_ready else f"not ready: {', '.join(report.not_ready)}")
        lines.append(f"asked for {', '.join(report.asked)}: {verdict} (exit {report.exit_code})")
    return lines
