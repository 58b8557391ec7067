"""`wae-deploy doctor`: what this machine can run, and for what it cannot, why and how to fix it.

For each target (torch, ort, openvino, trt) and precision: yes, slow (runs, without the
hardware that makes it fast), inexact (INT8 on an x86 CPU without VNNI: slower and less exact)
or no; the runtime version; for each "no" the reason and the
exact install command, or why installing would not help here (no NVIDIA GPU, a TensorRT
that does not pair with the JetPack, a CPU without BF16).

It asks each target module (`backends.get_backend(name).available()`); where a module is
missing or broken it checks the runtime package itself. Target names, aliases, precisions and
runtime packages come from the targets; the machine's facts from machine.py. Nothing here may
raise: every probe of the machine is guarded, and a failed probe reads as "unknown", never as a crash.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wae_deploy.core import __version__
from wae_deploy.core.errors import UserError
from wae_deploy.runtime import backends, machine
from wae_deploy.runtime.machine import LIVE, version_tuple

INSTALL_PYCUDA = "pip install pycuda (it compiles against the CUDA toolkit: nvcc must be on PATH)"
JETSON_TRT_INSTALL = "sudo apt install nvidia-tensorrt python3-libnvinfer (and a venv made with --system-site-packages)"
MIN_TRT = (10, 3)        # the strongly typed build path (convert/targets/tensorrt/engine.py)
MIN_CC = (7, 0)          # TensorRT 10 is built for compute capability 7.0 and higher (its support matrix)


@dataclass
class Row:
    target: str
    precision: str
    status: str          # "yes" | "slow" | "inexact" | "no"
    version: str         # runtime version ("" when not installed)
    note: str            # the reason for "no"/"slow", or a caveat for "yes"
    fix: str = ""        # the exact install command, or "cannot work here: ..."

    @property
    def runs(self) -> bool:
        return self.status in ("yes", "slow", "inexact")


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
# The machine, from machine.py. `root` lets tests fake a machine (a Jetson, a GPU box) in a folder.

def cpu_info(root: Path = LIVE) -> dict:
    """Model, cores and the features that decide INT8 and BF16 speed."""
    cpu = machine.parse_cpuinfo(machine.read(root, "proc/cpuinfo"))
    try:
        cores = len(os.sched_getaffinity(0)) if root == LIVE else None
    except (AttributeError, OSError):
        cores = None
    return {"model": cpu["model"] or platform.processor() or platform.machine(), "arch": platform.machine(),
            "cores": cores if cores is not None else os.cpu_count(), "class": machine.cpu_class(cpu["flags"]),
            **machine.cpu_features(cpu["flags"])}


def gpu_info(root: Path = LIVE, jetson: dict | None = None) -> dict:
    """An NVIDIA GPU and its CUDA driver: device nodes, the kernel module, libcuda, nvidia-smi."""
    smi = machine.nvidia_gpus(root)
    driver = machine.parse_driver_version(machine.read(root, "proc/driver/nvidia/version")) or \
        next((g["driver_version"] for g in smi if g.get("driver_version")), None)
    device = machine.gpu_device_node(root)
    libcuda = machine.libcuda(root)
    gpus = [{"name": g["name"], "compute_capability": g.get("compute_cap")} for g in smi]
    missing = []
    if not (device or jetson):
        missing.append("no /dev/nvidia0")
    if not libcuda:
        missing.append("no libcuda")
    return {"present": bool(device or driver or gpus or jetson is not None), "cuda_driver": bool(libcuda or driver),
            "driver_version": driver, "libcuda": libcuda, "gpus": gpus, "integrated": jetson is not None,
            "why_not": ", ".join(missing)}


def trt_pairing(jetpack: str | None, trt_version: str | None) -> str | None:
    """Why this TensorRT does not pair with this JetPack, or None when it does (or cannot be told).

    JetPack 6.0 ships TensorRT 8.6, 6.1 and 6.2 ship 10.3, 7.x ships 10.13; TensorRT 11 supports
    JetPack 7.2.2 or later only. wae-deploy needs TensorRT 10.3 or later.
    """
    jp, v = version_tuple(jetpack), version_tuple(trt_version)
    if not jp or not v:
        return None
    ships = machine.jetpack_trt(jetpack)
    if jp < (6, 1):
        return (f"JetPack {jetpack} ships TensorRT {ships}; wae-deploy needs TensorRT {'.'.join(map(str, MIN_TRT))}+: "
                "flash JetPack 6.1 or later")
    if jp < (7,) and v[:2] != (10, 3):
        return f"TensorRT {trt_version} does not pair with JetPack {jetpack}, which ships TensorRT 10.3"
    if jp >= (7,) and v >= (11,) and len(jp) > 1 and jp < (7, 2, 2):
        return f"TensorRT {trt_version} needs JetPack 7.2.2 or later; this is JetPack {jetpack} (TensorRT 10.13)"
    if jp >= (7,) and v < (10, 13):
        return f"TensorRT {trt_version} does not pair with JetPack {jetpack}, which ships TensorRT 10.13 or later"
    return None


def clocks_word(pinned: bool | None) -> str:
    return {True: "on", False: "off"}.get(pinned, "unknown (sudo jetson_clocks --show)")


# ---------------------------------------------------------------------------------------------
# Runtimes

def package_state(name: str) -> tuple[bool, str, str]:
    """(ok, version or reason, fix) from the target's runtime package itself, importing it to be sure."""
    try:
        cls = backends.backend_class(name)
        module, install = cls.runtime, cls.install
    except Exception as e:  # noqa: BLE001 - a broken target module must not break doctor
        return False, f"the {name} target module does not import: {type(e).__name__}: {e}", ""
    if _find_spec(module) is None:
        return False, f"{module} is not installed", install
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - a runtime whose libraries are missing fails in many ways
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return False, f"{module} is installed but does not import: {first}", install
    return True, str(machine.package_version(module) or getattr(mod, "__version__", "") or "unknown version"), ""


def _precisions(name: str) -> tuple[str, ...]:
    """The target's precisions, in the table's order; fp32 alone when its module cannot say."""
    try:
        got = tuple(backends.backend_class(name).precisions)
    except Exception:  # noqa: BLE001
        return ("fp32",)
    return tuple(p for p in backends.PRECISIONS if p in got) + tuple(p for p in got if p not in backends.PRECISIONS)


def target_state(name: str, gpu: dict, jetson: dict | None) -> TargetState:
    pkg_ok, pkg_msg, pkg_fix = package_state(name)
    checked, precisions = "package", _precisions(name)
    ok, msg = pkg_ok, pkg_msg
    try:
        ok, msg = backends.get_backend(name).available()
        ok, msg, checked = bool(ok), str(msg), "target"
    except (ImportError, AttributeError, TypeError, ValueError):
        pass  # the target module is missing or incomplete: the package check above stands
    except Exception as e:  # noqa: BLE001 - a broken available() must not break doctor
        ok, msg, checked = False, f"the {name} target's check failed: {type(e).__name__}: {e}", "target"
    version = msg if ok else (pkg_msg if pkg_ok else "")
    reasons = [] if ok else [msg]
    fix = "" if ok else pkg_fix
    if name == "trt":
        ok, reasons, fix = _trt_state(ok, reasons, fix, pkg_ok, pkg_msg, msg, gpu, jetson)
    reason = "; ".join(dict.fromkeys(r for r in reasons if r))
    return TargetState(name, ok, version if ok else (pkg_msg if pkg_ok else ""), reason, fix, precisions, checked)


def _trt_state(ok: bool, reasons: list[str], fix: str, pkg_ok: bool, trt_version: str, said: str, gpu: dict,
               jetson: dict | None) -> tuple[bool, list[str], str]:
    """TensorRT's own conditions: pycuda (not cuda-python), a GPU of compute capability 7.0+, the JetPack pairing."""
    install = backends.backend_class("trt").install
    if not ok and pkg_ok and not _has("pycuda"):
        reasons.append("pycuda is not installed (the TensorRT target drives CUDA through pycuda; "
                       "cuda-python does not replace it)")
        fix = INSTALL_PYCUDA
    ccs = [g.get("compute_capability") for g in gpu.get("gpus", []) if g.get("compute_capability")]
    ccs += re.findall(r"\bsm (\d+\.\d+)", said if ok else "")  # the target says "TensorRT X on GPU (sm 8.7, ...)"
    cc = max((version_tuple(c) for c in ccs), default=())
    if cc and cc < MIN_CC:
        ok = False
        problem = (f"compute capability {'.'.join(map(str, cc))}: TensorRT 10 and later need "
                   f"{'.'.join(map(str, MIN_CC))} or higher (Volta or newer)")
        reasons.append(problem)
        fix = f"cannot work here: {problem}"
    if jetson is not None:
        problem = trt_pairing(jetson.get("jetpack"), trt_version if pkg_ok else None)
        if problem:
            ok = False
            reasons.append(problem)
            fix = f"cannot work here as installed: {problem}; use the TensorRT that JetPack ships"
        elif not pkg_ok:
            jp, ships = jetson.get("jetpack"), machine.jetpack_trt(jetson.get("jetpack"))
            which = f" {jp} (TensorRT {ships})" if ships else ""
            fix = f"TensorRT comes with JetPack{which}, not pip: {JETSON_TRT_INSTALL}"
    elif not gpu.get("present") or not gpu.get("cuda_driver"):
        why = gpu.get("why_not") or "no CUDA driver"
        reasons.insert(0, f"no NVIDIA GPU / no CUDA driver here ({why})")
        ok = False
        fix = (f"cannot work here: TensorRT needs an NVIDIA GPU and its driver (desktop or Jetson); "
               f"on such a machine: {install}")
    return ok, reasons, fix


def _find_spec(module: str):
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def _has(module: str) -> bool:
    return _find_spec(module) is not None


NO_NNCF = "INT8 models from a plain ONNX are calibrated with NNCF, which is not installed"


def precision_row(t: TargetState, precision: str, cpu: dict, gpu: dict) -> Row:
    """One table row: does `precision` run on target `t` here, how well, and what to do if not."""
    version = t.version
    if not t.ok:
        return Row(t.name, precision, "no", version, t.reason, t.fix)
    if t.name == "trt":
        return _trt_row(t, precision)
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
            return Row(t.name, precision, "no", version, NO_NNCF, backends.backend_class("openvino").install)
        if cpu.get("int8_fast"):
            have = ", ".join(cpu.get("vnni", []) + [a for a in cpu.get("amx", []) if a == "amx_int8"]
                             + cpu.get("arm_int8", []))
            return Row(t.name, precision, "yes", version, f"fast INT8 ({have})")
        if cpu.get("class") in ("avx2", "avx512"):
            return Row(t.name, precision, "inexact", version,
                       f"{cpu['class']} without VNNI: INT8 sums saturate at 16 bits, so it is less exact and gains "
                       "less speed (builds take a recipe for it and the accuracy guard)",
                       "a CPU with VNNI (avx512_vnni/avx_vnni) or AMX makes INT8 fast and exact")
        why = "cannot tell the CPU features" if not cpu.get("flags_read") else "no VNNI/AMX"
        return Row(t.name, precision, "slow", version, f"{why}: INT8 runs, but may be no faster than FP32",
                   "a CPU with VNNI (avx512_vnni/avx_vnni) or AMX makes INT8 fast")
    return Row(t.name, precision, "yes", version, "")


def _trt_row(t: TargetState, precision: str) -> Row:
    if precision == "fp16":
        return Row(t.name, precision, "yes", t.version, "strongly typed: FP16 comes from an FP16-typed ONNX")
    if precision == "int8":
        if not _has("nncf"):   # a Q/DQ ONNX builds without it; a plain one is calibrated with NNCF
            return Row(t.name, precision, "no", t.version, NO_NNCF + " (a Q/DQ ONNX builds without it)",
                       backends.backend_class("trt").install)
        return Row(t.name, precision, "yes", t.version, "from Q/DQ nodes (explicit quantization)")
    return Row(t.name, precision, "yes", t.version, "")


# ---------------------------------------------------------------------------------------------

def parse_asked(asked: tuple[str, ...] | list[str]) -> list[tuple[str, str | None]]:
    """'ort', 'openvino:int8' -> [(target, precision or None)]; unknown names are a UserError."""
    out = []
    for item in asked:
        name, _, precision = item.strip().lower().partition(":")
        try:
            name = backends.canonical(name)
        except UserError:
            raise UserError(f"unknown target {item!r}; known: {', '.join(backends.NAMES)} (optionally :PRECISION)") \
                from None
        if precision and precision not in backends.PRECISIONS:
            raise UserError(f"unknown precision in {item!r}; known: {', '.join(backends.PRECISIONS)}")
        out.append((name, precision or None))
    return out


def diagnose(asked: tuple[str, ...] | list[str] = (), root: Path = LIVE) -> Report:
    wanted = parse_asked(asked)
    cpu = cpu_info(root)
    jetson = machine.jetson(root)
    gpu = gpu_info(root, jetson)
    states = {name: target_state(name, gpu, jetson) for name in backends.NAMES}
    rows = [precision_row(states[n], p, cpu, gpu) for n in backends.NAMES for p in states[n].precisions]
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
    cpu += f" · class {c.get('class') or 'unknown'}"
    int8 = "fast" if c["int8_fast"] else "inexact" if c.get("class") in ("avx2", "avx512") else "slow"
    cpu += f" -> INT8 {int8}, BF16 {'native' if c['bf16_native'] else 'not native'}"
    lines.append(cpu)
    if g["present"]:
        names = ", ".join(f"{x['name']} (sm {x['compute_capability']})" for x in g["gpus"]) or \
            ("integrated (Jetson)" if g["integrated"] else "NVIDIA GPU")
        lines.append(f"GPU: {names} · driver {g['driver_version'] or 'unknown'} · "
                     f"libcuda {'found' if g['libcuda'] else 'not found'}")
    else:
        lines.append(f"GPU: no NVIDIA GPU ({g['why_not'] or 'none found'})")
    if j is not None:
        mode = j["power_mode"] or (f"id {j['power_mode_id']}" if j["power_mode_id"] is not None else None)
        lines.append(f"Jetson: {j['model'] or 'unknown board'} · L4T {j['l4t'] or '?'} · JetPack "
                     f"{j['jetpack'] or '?'} (TensorRT {machine.jetpack_trt(j['jetpack']) or '?'}) · power mode "
                     f"{mode or 'unknown (nvpmodel -q)'} · jetson_clocks {clocks_word(j['jetson_clocks'])}")
    return lines


def render_table(report: Report):
    from rich.table import Table
    from rich.text import Text

    style = {"yes": "green", "slow": "yellow", "inexact": "yellow", "no": "red"}
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
