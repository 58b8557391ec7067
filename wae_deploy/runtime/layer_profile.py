"""Where a model's time goes, layer by layer, as the runtime itself reports it.

    prof = profile("build/wae.ort-int8", batch=1, runs=20)   # an artifact folder or an exported .onnx
    prof.layers[0]      # Layer(name, op, kernel, precision, part, ms, share): the slowest first
    prof.parts()        # {"main": 0.61, "fusion": 0.22, "encoder": 0.09, ...}: share of the kernel time

The numbers are the runtime's own: ONNX Runtime's profiler (SessionOptions.enable_profiling,
one "Node" event per kernel run in the JSON trace it writes) and OpenVINO's performance counters
(PERF_COUNT, InferRequest.get_profiling_info() after each call, with the kernel that ran, e.g.
brgconv_avx512_I8). A layer's precision is what ran, not what was asked for. TensorRT engines
are not profiled (no GPU here to check an IProfiler against): `cannot_profile` says so.

A batch larger than one runtime call takes is run in the chunks inference uses (Runner.chunks),
and a layer's time is per call of the whole batch: the sum over its chunks.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wae_deploy.core.errors import UserError
from wae_deploy.runtime import artifact

PROFILERS = ("ort", "openvino")
# The model's parts, by the module that made each node (export names nodes "main.features.3/Conv");
# a runtime's fused or reordered nodes keep that name inside theirs ("Reorder_main.features.3/Conv").
PART_OF_MODULE = {"decomposer": "encoder", "norm_low": "main", "main": "main", "norm_high": "high",
                  "high": "high", "fusion": "fusion", "net": "classifier"}
_MODULE = re.compile(r"(?:^|[_/ ])(" + "|".join(sorted(PART_OF_MODULE, key=len, reverse=True)) + r")[./_]")
# Precision names: ONNX Runtime's tensor types and OpenVINO's kernel suffixes -> one vocabulary.
_PRECISION = {"float": "fp32", "f32": "fp32", "fp32": "fp32", "float16": "fp16", "f16": "fp16", "fp16": "fp16",
              "bfloat16": "bf16", "bf16": "bf16", "int8": "int8", "uint8": "int8", "i8": "int8", "u8": "int8",
              "int32": "int32", "i32": "int32", "int64": "int64", "i64": "int64"}


def part_of(node_name: str, known: dict[str, str] | None = None) -> str:
    """'main.features.3/Conv' -> 'main'; a node no module claims (the final Add, a reorder) -> 'other'.

    Runtimes rename what they fuse, often after a tensor (ONNX Runtime's "relu_12_nchwc" is the
    convolution that writes tensor "relu_12"): `known` maps the source graph's node and tensor
    names to parts, and the longest of them inside the runtime's name decides.
    """
    m = _MODULE.search(node_name)
    if m:
        return PART_OF_MODULE[m.group(1)]
    # A whole word of the runtime's name: "relu_1" is not inside "relu_12_nchwc".
    hits = [k for k in (known or {}) if re.search(rf"(?:^|[_/]){re.escape(k)}(?:$|[_/])", node_name)]
    return known[max(hits, key=len)] if hits else "other"


def source_parts(model) -> dict[str, str]:
    """An onnx.ModelProto's node and output tensor names -> the part of the node (see part_of)."""
    out = {}
    for node in model.graph.node:
        part = part_of(node.name)
        if part != "other":
            out.update({name: part for name in (node.name, *node.output) if name})
    return out


@dataclass
class Layer:
    name: str          # the runtime's node name (after its own fusions)
    op: str            # the layer type the runtime reports (QLinearConv, Convolution, ...)
    kernel: str        # the implementation that ran (ORT: op and provider; OpenVINO: exec_type)
    precision: str     # what it computed in: fp32, bf16, int8, or "int8->fp32" for a (de)quantizer
    part: str
    ms: float          # per call of the whole batch, mean over the runs
    share: float = 0.0  # of the summed kernel time


@dataclass
class Profile:
    target: str
    precision: str
    model: str
    batch: int
    runs: int
    chunks: int        # runtime calls per run (1 unless the batch exceeds what one call takes)
    wall_ms: float     # mean wall time of a run, profiling overhead included (layers are means too)
    layers: list[Layer] = field(default_factory=list)

    @property
    def kernel_ms(self) -> float:
        return sum(lay.ms for lay in self.layers)

    def parts(self) -> dict[str, float]:
        shares: dict[str, float] = defaultdict(float)
        for lay in self.layers:
            shares[lay.part] += lay.share
        return dict(sorted(shares.items(), key=lambda kv: -kv[1]))

    def by_precision(self) -> dict[str, float]:
        shares: dict[str, float] = defaultdict(float)
        for lay in self.layers:
            shares[lay.precision] += lay.share
        return dict(sorted(shares.items(), key=lambda kv: -kv[1]))

    def to_dict(self, top: int | None = 15) -> dict:
        """The results schema's `profile` object: the `top` slowest layers (None: all)."""
        return {"target": self.target, "precision": self.precision, "batch": self.batch, "runs": self.runs,
                "chunks": self.chunks, "wall_ms": self.wall_ms, "kernel_ms": self.kernel_ms, "nodes": len(self.layers),
                "parts": self.parts(), "precisions": self.by_precision(),
                "layers": [asdict(lay) for lay in self.layers[:top]]}


def cannot_profile(target: str) -> str | None:
    """Why `target` cannot be profiled (one line), or None when it can."""
    if target in PROFILERS:
        return None
    if target == "trt":
        return ("target trt cannot profile: TensorRT's IProfiler is not wired up (no GPU here to check it "
                "against); use trtexec --dumpProfile on the device")
    return f"target {target} cannot profile (profiles come from {', '.join(PROFILERS)})"


def _precision(name: str) -> str:
    return _PRECISION.get(name.lower(), name.lower())


def _finish(prof: Profile, times: dict[str, float], meta: dict[str, tuple[str, str, str]],
            known: dict[str, str] | None = None) -> Profile:
    total = sum(times.values()) or 1.0
    prof.layers = sorted((Layer(name, *meta[name], part_of(name, known), ms / prof.runs, ms / total)
                          for name, ms in times.items()), key=lambda lay: -lay.ms)
    return prof


# ------------------------------------------------------------------------------ ONNX Runtime

def _ort_precision(args: dict) -> str:
    """The first input's element type; "int8->fp32" where the output's type differs (a (de)quantizer)."""
    def first(key):
        shapes = args.get(key) or [{}]
        return _precision(next(iter(shapes[0]), "?")) if shapes[0] else "?"
    src, dst = first("input_type_shape"), first("output_type_shape")
    return src if dst in (src, "?") else f"{src}->{dst}"


def ort_layers(trace: list[dict], runs: int) -> tuple[dict[str, float], dict[str, tuple[str, str, str]]]:
    """Kernel time per node (ms summed over the last `runs` model runs) and (op, kernel, precision).

    Node events are kept when they fall inside one of the last `runs` "model_run" events, so the
    warm-up calls (and session start-up) recorded in the same trace are left out.
    """
    model_runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace
                        if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    if not model_runs:
        raise ValueError("the ONNX Runtime trace has no model_run event")
    starts = np.array([s for s, _ in model_runs])
    ends = np.array([e for _, e in model_runs])
    times: dict[str, float] = defaultdict(float)
    meta: dict[str, tuple[str, str, str]] = {}
    for e in trace:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        i = np.searchsorted(starts, e["ts"], side="right") - 1
        if i < 0 or e["ts"] > ends[i]:
            continue
        name = e["name"][: -len("_kernel_time")]
        args = e.get("args", {})
        times[name] += e["dur"] / 1e3
        op = args.get("op_name", "?")
        provider = args.get("provider", "").replace("ExecutionProvider", "")
        meta[name] = (op, f"{op}/{provider}" if provider else op, _ort_precision(args))
    return times, meta


def _profile_ort(model_path: Path, prof: Profile, feed: np.ndarray, threads: int | None, warmup: int) -> Profile:
    from wae_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner

    with tempfile.TemporaryDirectory() as tmp:
        runner = OnnxRuntimeRunner(model_path, threads, profile_prefix=str(Path(tmp) / "ort"))
        try:
            prof.wall_ms, prof.chunks = _run(runner, feed, prof.runs, warmup)
            trace_file = runner.session.end_profiling()
            trace = json.loads(Path(trace_file).read_text())
        finally:
            runner.close()
    # One model_run event per runtime call: the last runs x chunks of them are the timed ones.
    times, meta = ort_layers(trace, prof.runs * prof.chunks)
    import onnx

    return _finish(prof, times, meta, source_parts(onnx.load(str(model_path), load_external_data=False)))


# ------------------------------------------------------------------------------ OpenVINO

def openvino_layers(infos, times: dict[str, float], meta: dict[str, tuple[str, str, str]]) -> None:
    """Add one call's ProfilingInfo list (executed nodes only) to `times` (ms) and `meta`."""
    for p in infos:
        if str(p.status).rsplit(".", 1)[-1] != "EXECUTED":
            continue
        times[p.node_name] += p.real_time.total_seconds() * 1e3
        kernel = p.exec_type
        meta[p.node_name] = (p.node_type, kernel, _precision(kernel.rsplit("_", 1)[-1]) if "_" in kernel else "?")


def _profile_openvino(xml: Path, precision: str, prof: Profile, feed: np.ndarray, threads: int | None,
                      warmup: int) -> Profile:
    from wae_deploy.runtime.backends.openvino import OpenVINORunner

    runner = OpenVINORunner(xml, precision, threads, profiling=True)
    times: dict[str, float] = defaultdict(float)
    meta: dict[str, tuple[str, str, str]] = {}
    try:
        # get_profiling_info() holds the last call only: read it after every call of the timed runs.
        prof.wall_ms, prof.chunks = _run(runner, feed, prof.runs, warmup,
                                         after_call=lambda: openvino_layers(runner.request.get_profiling_info(),
                                                                            times, meta))
        known = {}
        for op in runner.compiled.get_runtime_model().get_ops():
            # The plugin lists the source layers it fused into each of its own.
            info = op.get_rt_info()
            names = str(info["originalLayersNames"].astype(str)).split(",") if "originalLayersNames" in info else []
            parts = [p for p in map(part_of, names) if p != "other"]
            if parts:
                known[op.get_friendly_name()] = parts[0]
    finally:
        runner.close()
    return _finish(prof, times, meta, known)


# ------------------------------------------------------------------------------ shared

def _run(runner, feed: np.ndarray, runs: int, warmup: int, after_call=None) -> tuple[float, int]:
    """Warm up, then `runs` runs of the whole batch in the runner's chunks: (mean wall ms, chunks per run)."""
    chunks = list(runner.chunks(feed))
    for _ in range(warmup):
        for c in chunks:
            runner.infer(c)
    walls = []
    for _ in range(runs):
        wall = 0.0
        for c in chunks:
            t0 = time.perf_counter()
            runner.infer(c)
            wall += time.perf_counter() - t0
            if after_call:
                after_call()
        walls.append(wall * 1e3)
    return float(np.mean(walls)), len(chunks)


def profile(model: str | Path, batch: int = 1, runs: int = 20, threads: int | None = None, warmup: int = 3,
            images: np.ndarray | None = None) -> Profile:
    """Profile an artifact folder (on the runtime it was built for) or an .onnx model (ONNX Runtime; Q/DQ: INT8).

    `images`: a preprocessed N x 3 x H x W batch to feed (repeated or cut to `batch`); default zeros.
    """
    if batch < 1 or runs < 1:
        raise UserError(f"--batch and --runs must be positive, got {batch} and {runs}")
    path = Path(model)
    if path.is_dir():
        art = artifact.open(path)
        target, precision, spec = art.target, art.precision, art.preprocessing
        why = cannot_profile(target)
        if why:
            raise UserError(why)
        from wae_deploy.runtime.backends import get_backend

        get_backend(target).load(path, threads).close()   # refuses another runtime version, as load does
    elif path.suffix == ".onnx" and path.is_file():
        import onnx

        from wae_deploy.runtime import onnx_meta

        graph = onnx.load(str(path), load_external_data=False).graph
        quantized = any(n.op_type == "DequantizeLinear" for n in graph.node)   # a Q/DQ model (an ORT INT8 build)
        target, precision, spec = "ort", "int8" if quantized else "fp32", onnx_meta.read(path).preprocessing
    else:
        raise UserError(f"not an artifact folder or an .onnx model: {path}")
    shape = (3, spec.crop, spec.crop)
    feed = (np.zeros((batch, *shape), np.float32) if images is None
            else np.resize(np.asarray(images, np.float32), (batch, *shape)))
    prof = Profile(target, precision, path.name, batch, runs, 1, 0.0)
    if target == "ort":
        return _profile_ort(art.file("model.onnx") if path.is_dir() else path, prof, feed, threads, warmup)
    return _profile_openvino(art.file("model.xml"), precision, prof, feed, threads, warmup)


def table_lines(prof: Profile, top: int = 15) -> list[str]:
    """A plain-text report: the parts, then the slowest layers."""
    out = [f"{prof.model}: {prof.target} {prof.precision}, batch {prof.batch}, {prof.runs} runs"
           + (f" in {prof.chunks} calls each" if prof.chunks > 1 else "")
           + f": {prof.wall_ms:.2f} ms per run (profiled), kernels {prof.kernel_ms:.2f} ms, {len(prof.layers)} nodes",
           "parts: " + ", ".join(f"{p} {s:.1%}" for p, s in prof.parts().items()),
           "precision: " + ", ".join(f"{p} {s:.1%}" for p, s in prof.by_precision().items()),
           f"{'share':>6} {'ms':>8}  {'precision':<10} {'part':<8} {'kernel':<28} layer"]
    for lay in prof.layers[:top]:
        out.append(f"{lay.share:6.1%} {lay.ms:8.3f}  {lay.precision:<10} {lay.part:<8} {lay.kernel:<28} {lay.name}")
    return out
