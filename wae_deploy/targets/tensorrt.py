"""TensorRT target: exported ONNX -> serialized engine (.plan) for NVIDIA GPUs and Jetson.

`tensorrt` and `pycuda` are imported inside methods, so this module (and its pure-ONNX helpers:
the Q/DQ checker, the FP16 converter, the cache keys) imports and is tested on machines without them.

Two TensorRT generations are supported, because JetPack 6 (Orin) ships 10.3 while desktops move on.
Both build one way: a strongly typed network (NetworkDefinitionCreationFlag.STRONGLY_TYPED exists
from 10.3 and is the only mode in 11, where the FP16/INT8 builder flags are gone), so FP16 comes from
an FP16-typed ONNX (to_fp16 below) and INT8 from Q/DQ nodes. fp32 clears the TF32 flag, which
TensorRT sets by default on Ampere and later (Orin included).
For int8 a plain ONNX is quantized with the project's NNCF recipe (quantize.py), so one calibration
serves every runtime; a Q/DQ ONNX is taken as it is.

Engines are not portable across TensorRT versions or GPUs, so each build is cached under a key of
(ONNX hash, TensorRT version, GPU name, compute capability, precision, profile shapes), and every
engine carries a JSON sidecar (<name>.plan.json) written after it; an engine whose sidecar is missing,
stale or for another key is rebuilt, never loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, inliner, numpy_helper

from .. import artifact, atomic, onnx_meta
from ..artifact import Artifact
from ..data import ImageSet, cache_dir
from ..errors import UserError
from .base import Runner, Target

INSTALL_HINT = "pip install 'wae-deploy[trt]' (on a Jetson, TensorRT comes with JetPack)"
INPUT = "images"          # the exported model's input: N x 3 x H x W, dynamic N
ENGINE = "engine.plan"    # inside the artifact folder, beside manifest.json
FP16_MAX = 65504.0


# ---------------------------------------------------------------- cache keys and profile shapes

def _cc(compute_capability) -> str:
    """(8, 7) or "8.7" -> "8.7"."""
    if isinstance(compute_capability, (tuple, list)):
        return ".".join(str(int(v)) for v in compute_capability)
    return str(compute_capability)


def engine_cache_key(onnx_bytes_sha256: str, trt_version: str, gpu_name: str, compute_capability,
                     precision: str, profile_shapes: dict, sm_count: int, build_options: dict) -> str:
    """A stable hash of everything that makes an engine valid; any change means a new engine.

    The SM count is there because every Orin module reports the same name and compute capability;
    build_options (workspace, flags) change which kernels the builder may pick.
    """
    fields = {
        "onnx": onnx_bytes_sha256, "trt": str(trt_version), "gpu": gpu_name, "sm": _cc(compute_capability),
        "sms": int(sm_count), "options": build_options, "precision": precision,
        "profile": {name: [[int(d) for d in shape] for shape in shapes] for name, shapes in profile_shapes.items()},
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def onnx_input_hw(model: onnx.ModelProto) -> tuple[int, int]:
    """(H, W) of the N x 3 x H x W input "images"; the batch axis must be dynamic for the profile."""
    inputs = {i.name: i for i in model.graph.input}
    if INPUT not in inputs:
        raise UserError(f"the ONNX model has no input {INPUT!r} (inputs: {', '.join(inputs) or 'none'})")
    dims = inputs[INPUT].type.tensor_type.shape.dim
    if len(dims) != 4 or dims[1].dim_value != 3 or not (dims[2].dim_value and dims[3].dim_value):
        raise UserError(f"input {INPUT!r} must be N x 3 x H x W with fixed H and W")
    if dims[0].dim_value:
        raise UserError(f"input {INPUT!r} has a fixed batch of {dims[0].dim_value}: export with a dynamic batch axis")
    return dims[2].dim_value, dims[3].dim_value


def profile_shapes(hw: tuple[int, int], min_batch: int = 1, opt_batch: int = 8, max_batch: int = 32) -> dict:
    """The one optimization profile: {input: (min, opt, max) shapes} over the batch axis."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise UserError(f"profile batches must satisfy 1 <= min <= opt <= max, got {min_batch}/{opt_batch}/{max_batch}")
    h, w = hw
    return {INPUT: tuple((b, 3, h, w) for b in (min_batch, opt_batch, max_batch))}


# ---------------------------------------------------------------- Q/DQ models for TensorRT

def _constants(graph) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _qtype(node, consts) -> np.dtype | None:
    """The integer type a Q/DQ node works in; a QuantizeLinear without a zero point defaults to uint8."""
    if len(node.input) > 2 and node.input[2] in consts:
        return consts[node.input[2]].dtype
    if node.op_type == "QuantizeLinear":
        out = next((a.i for a in node.attribute if a.name == "output_dtype" and a.i), TensorProto.UINT8)
        return np.dtype(helper.tensor_dtype_to_np_dtype(out))
    return consts[node.input[0]].dtype if node.input[0] in consts else None


def check_qdq_for_tensorrt(model: onnx.ModelProto) -> list[str]:
    """Problems that stop TensorRT from using a Q/DQ model as INT8; [] when it is fine.

    TensorRT quantizes symmetrically in signed int8: zero points 0, activations per-tensor,
    Conv weights per-tensor or per output channel (axis 0); scales are build-time constants.
    """
    graph = model.graph
    consts = _constants(graph)
    producer = {out: node for node in graph.node for out in node.output}
    users = defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            users[name].append((node, i))
    outputs = {o.name for o in graph.output}
    problems = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = f"{node.op_type} {node.name or node.output[0]!r}"
        scale = consts.get(node.input[1])
        if scale is None:
            problems.append(f"{where}: scale is not a constant")
        elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            problems.append(f"{where}: scales must be positive and finite")
        qtype = _qtype(node, consts)
        if qtype is not None and qtype != np.int8:
            problems.append(f"{where}: {qtype} quantization; TensorRT needs int8")
        zero_point = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero_point is not None and np.any(zero_point != 0):
            problems.append(f"{where}: zero point is not 0 (asymmetric); TensorRT needs symmetric quantization")
        if node.op_type == "QuantizeLinear":
            after = users[node.output[0]]
            if node.output[0] in outputs or not after or any(u.op_type != "DequantizeLinear" for u, _ in after):
                problems.append(f"{where}: not followed by a DequantizeLinear")
            if node.input[0] not in consts and scale is not None and scale.size != 1:
                problems.append(f"{where}: per-channel activation quantizer; TensorRT needs per-tensor")
            continue
        # A DequantizeLinear feeding a Conv weight: pre-quantized int8 weights, or Q(weights) -> DQ.
        for user, slot in users[node.output[0]]:
            if user.op_type != "Conv" or slot != 1 or scale is None:
                continue
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            source = producer.get(node.input[0])
            weight = consts.get(node.input[0] if source is None else source.input[0])
            if scale.size == 1:
                continue            # per-tensor weights: TensorRT takes them (QAT exports often have them)
            if axis != 0:
                problems.append(f"{where}: weight quantizer on axis {axis} for Conv {user.name!r}; expected axis 0")
            elif weight is not None and scale.size != weight.shape[0]:
                problems.append(f"{where}: {scale.size} scales for {weight.shape[0]} output channels")
    return problems


def signed_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """uint8 quantizers with zero point 0 -> int8 with scale * 255/127 (same range, one bit less).

    NNCF's symmetric preset quantizes non-negative activations (after ReLU) as unsigned int8 with a
    zero point of 0; TensorRT has no uint8 Q/DQ, and its own INT8 keeps such tensors in [0, 127] too.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    consts = _constants(g)
    unsigned = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2
                and n.input[1] in consts and n.input[2] in consts
                and consts[n.input[2]].dtype == np.uint8 and not np.any(consts[n.input[2]])]
    new = {}
    for n in unsigned:
        new[n.input[1]] = (consts[n.input[1]] * np.float32(255 / 127)).astype(consts[n.input[1]].dtype)
        new[n.input[2]] = np.zeros_like(consts[n.input[2]], dtype=np.int8)
    for i, t in enumerate(g.initializer):
        if t.name in new:
            g.initializer[i].CopyFrom(numpy_helper.from_array(new[t.name], t.name))
    for node in g.node:
        if node.op_type == "Constant" and node.output[0] in new:
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(new[node.output[0]]))
    quantized = {n.output[0] for n in unsigned if n.op_type == "QuantizeLinear"}
    for vi in [*g.value_info, *g.output]:        # the quantized tensors' recorded types follow
        if vi.name in quantized and vi.type.tensor_type.elem_type == TensorProto.UINT8:
            vi.type.tensor_type.elem_type = TensorProto.INT8
    return model


# ---------------------------------------------------------------- FP16 ONNX for strongly typed TensorRT

_FLOAT32_ONLY = {("Resize", 2), ("Upsample", 1)}   # inputs the ONNX spec types as tensor(float) only


def _half(tensor: TensorProto) -> TensorProto:
    array = numpy_helper.to_array(tensor)
    # clip, don't overflow to inf: fp16 tops out at 65504
    return numpy_helper.from_array(np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16), tensor.name)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16-typed copy whose input and output stay float32 (Casts at the edges).

    Every float initializer, Constant and Cast-to-float becomes float16, so a strongly typed network
    (TensorRT 11) computes in FP16. Fine for CNN classifiers; models with numerically sensitive ops
    want a mixed-precision tool (NVIDIA's ModelOpt AutoCast) instead.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if model.functions:
        model = inliner.inline_local_functions(model)
    g = model.graph
    if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        raise UserError("FP16 conversion does not handle control-flow subgraphs (If/Loop/Scan)")
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    keep = {n.input[i] for n in g.node for op, i in _FLOAT32_ONLY if n.op_type == op and len(n.input) > i}
    for i, t in enumerate(g.initializer):
        if t.data_type == FLOAT and t.name not in keep:
            g.initializer[i].CopyFrom(_half(t))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR and attr.t.data_type == FLOAT and not keep & set(node.output):
                attr.t.CopyFrom(_half(attr.t))           # Constant, ConstantOfShape
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                attr.i = HALF
    for vi in g.value_info:
        if vi.type.tensor_type.elem_type == FLOAT and vi.name not in keep:
            vi.type.tensor_type.elem_type = HALF

    def rename(old: str, new: str) -> None:
        for node in g.node:
            node.input[:] = [new if name == old else name for name in node.input]
            node.output[:] = [new if name == old else name for name in node.output]

    initializers = {t.name for t in g.initializer}
    head, tail = [], []
    for inp in g.input:
        if inp.name not in initializers and inp.type.tensor_type.elem_type == FLOAT:
            rename(inp.name, inp.name + "_fp16")
            head.append(helper.make_node("Cast", [inp.name], [inp.name + "_fp16"], to=HALF, name=f"{inp.name}_to_fp16"))
    for out in g.output:
        if out.type.tensor_type.elem_type == FLOAT:
            rename(out.name, out.name + "_fp16")
            tail.append(helper.make_node("Cast", [out.name + "_fp16"], [out.name], to=FLOAT,
                                         name=f"{out.name}_to_fp32"))
    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    return model


# ---------------------------------------------------------------- engines on disk

def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def write_engine(path: Path, plan: bytes, meta: dict) -> None:
    """Engine first, sidecar last (both atomic): a crash in between leaves an engine nobody loads."""
    sidecar_path(path).unlink(missing_ok=True)
    atomic.write_bytes(path, plan)
    stamped = {**meta, "engine_sha256": hashlib.sha256(plan).hexdigest()}
    atomic.write_text(sidecar_path(path), json.dumps(stamped, indent=2, sort_keys=True) + "\n")


def read_engine(path: Path) -> tuple[bytes, dict]:
    """(plan, sidecar) or UserError when the engine is missing, unstamped or not the one stamped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no TensorRT engine at {path}")
    try:
        meta = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} has no readable sidecar {sidecar_path(path).name} ({e}); rebuild it") from e
    plan = path.read_bytes()
    if meta.get("engine_sha256") != hashlib.sha256(plan).hexdigest():
        raise UserError(f"{path} does not match its sidecar (stale or partly written); rebuild it")
    return plan, meta


def check_engine_identity(meta: dict, trt_version: str, gpu_name: str, compute_capability, sm_count: int,
                          path="engine") -> None:
    """An engine runs only on the TensorRT version and GPU (model and SM count) that built it."""
    built = (meta.get("tensorrt"), meta.get("gpu"), meta.get("compute_capability"), meta.get("sm_count"))
    here = (str(trt_version), gpu_name, _cc(compute_capability), int(sm_count))
    if built != here:
        raise UserError(f"{path} was built by TensorRT {built[0]} for {built[1]} (sm {built[2]}, {built[3]} SMs), "
                        f"but this machine has TensorRT {here[0]} on {here[1]} (sm {here[2]}, {here[3]} SMs): "
                        "engines are not portable, rebuild it here")


class EngineCache:
    """Engines under <root>/<key>.plan (+ sidecar), and one timing cache per TensorRT version and GPU."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_dir() / "trt"

    def get(self, key: str) -> bytes | None:
        try:
            plan, meta = read_engine(self.root / f"{key}.plan")
        except UserError:
            return None
        return plan if meta.get("key") == key else None

    def put(self, key: str, plan: bytes, meta: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_engine(self.root / f"{key}.plan", plan, {**meta, "key": key})

    def timing_cache_path(self, trt_version: str, gpu_name: str, compute_capability, sm_count: int) -> Path:
        gpu = re.sub(r"[^A-Za-z0-9.]+", "-", gpu_name).strip("-")
        return self.root / f"timing-{trt_version}-{gpu}-sm{_cc(compute_capability)}-{int(sm_count)}sms.cache"


# ---------------------------------------------------------------- the target

def _import_runtime():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise UserError(f"tensorrt is not installed: {INSTALL_HINT}") from e
    try:
        import pycuda.driver as cuda
    except ImportError as e:       # also raised when libcuda (the NVIDIA driver) is absent
        raise UserError(f"pycuda is not usable ({e}): {INSTALL_HINT}") from e
    return trt, cuda


def _gpu(cuda, device: int) -> tuple[str, tuple[int, int], int]:
    """(name, compute capability, SM count) of the selected GPU."""
    try:
        cuda.init()
        if cuda.Device.count() <= device:
            raise UserError(f"no CUDA GPU {device} found")
        dev = cuda.Device(device)
        sms = dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
        return dev.name(), tuple(dev.compute_capability()), int(sms)
    except UserError:
        raise
    except Exception as e:         # pycuda's driver errors: no driver, no device
        raise UserError(f"no CUDA GPU found ({e})") from e


class TensorRTTarget(Target):
    name = "trt"
    precisions = ("fp32", "fp16", "int8")

    def __init__(self, min_batch: int = 1, opt_batch: int = 8, max_batch: int = 32,
                 device: int = 0, workspace_mb: int | None = None, cache_root: Path | None = None):
        profile_shapes((1, 1), min_batch, opt_batch, max_batch)     # validate early
        self.batches = (min_batch, opt_batch, max_batch)
        self.device, self.workspace_mb = device, workspace_mb
        self.cache = EngineCache(cache_root)

    def available(self) -> tuple[bool, str]:
        try:
            trt, cuda = _import_runtime()
            gpu, cc, sms = _gpu(cuda, self.device)
        except UserError as e:
            return False, str(e)
        return True, f"TensorRT {trt.__version__} on {gpu} (sm {_cc(cc)}, {sms} SMs)"

    def build(self, onnx_path: Path, precision: str, calib: ImageSet | None, out: Path,
              keep_float: tuple[str, ...] = (), meta: dict | None = None) -> Artifact:
        if precision not in self.precisions:
            raise UserError(f"TensorRT precisions are {', '.join(self.precisions)}, not {precision!r}")
        trt, cuda = _import_runtime()
        model = onnx_meta.load_model(onnx_path)
        info = onnx_meta.from_model(model, str(onnx_path))
        has_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
        if precision == "int8":
            if not has_qdq:
                if calib is None:
                    raise UserError(f"{onnx_path} has no Q/DQ nodes and no calibration set was given")
                # The same NNCF recipe as the CPU targets: one calibration serves every runtime.
                from ..quantize import quantize

                model = quantize(model, calib, info.preprocessing, keep_float, input_name=model.graph.input[0].name)
            model = signed_qdq(model)         # NNCF's unsigned post-ReLU quantizers -> int8
            problems = check_qdq_for_tensorrt(model)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise UserError(f"{onnx_path} cannot run as TensorRT INT8: {problems[0]}{more}")
        elif has_qdq:
            raise UserError(f"{onnx_path} is a Q/DQ model: build it with --precision int8")
        shapes = profile_shapes(onnx_input_hw(model), *self.batches)
        if precision == "fp16":
            model = to_fp16(model)           # strongly typed: the ONNX types choose the precision
        onnx_bytes = model.SerializeToString()
        gpu, cc, sms = _gpu(cuda, self.device)
        options = self.build_options(precision)
        key = engine_cache_key(hashlib.sha256(onnx_bytes).hexdigest(), trt.__version__, gpu, cc, precision, shapes,
                               sms, options)
        stamp = {"tensorrt": trt.__version__, "gpu": gpu, "compute_capability": _cc(cc), "sm_count": sms,
                 "precision": precision, "profile": shapes, "build_options": options, "key": key}
        plan = self.cache.get(key)
        if plan is None:
            timing = self.cache.timing_cache_path(trt.__version__, gpu, cc, sms)
            plan = self._build_engine(trt, cuda, onnx_bytes, precision, shapes, timing)
            self.cache.put(key, plan, stamp)
        return self._write_artifact(out, plan, stamp, onnx_path, info, meta, keep_float)

    def _write_artifact(self, out: Path, plan: bytes, stamp: dict, onnx_path: Path, info, meta: dict | None,
                        keep_float) -> Artifact:
        """The artifact folder (engine + sidecar + manifest), all or nothing; the one place it is written."""
        details = {k: v for k, v in stamp.items() if k not in ("tensorrt", "precision", "key")}
        manifest = artifact.new_manifest(onnx_path, info, self.name, stamp["precision"], stamp["tensorrt"],
                                         **(meta or {}), keep_float=list(keep_float),
                                         details={**details, "cache_key": stamp["key"]})
        with atomic.atomic_dir(out) as tmp:
            write_engine(tmp / ENGINE, plan, stamp)
            return artifact.write(tmp, out, manifest)

    def build_options(self, precision: str) -> dict:
        """What _build_on_current_gpu sets besides the network and profile: part of the engine's identity."""
        return {"typing": "strong", "tf32": precision != "fp32", "workspace_mb": self.workspace_mb}

    def _build_engine(self, trt, cuda, onnx_bytes: bytes, precision: str, shapes: dict, timing: Path) -> bytes:
        # The build runs on the selected GPU: its primary context is current for the whole build.
        ctx = cuda.Device(self.device).retain_primary_context()
        ctx.push()
        try:
            return self._build_on_current_gpu(trt, onnx_bytes, precision, shapes, timing)
        finally:
            ctx.pop()
            ctx.detach()

    def _build_on_current_gpu(self, trt, onnx_bytes: bytes, precision: str, shapes: dict, timing: Path) -> bytes:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        # One typing path for 10.3+ and 11: strongly typed, so the ONNX types (FP16 casts, Q/DQ nodes)
        # choose the precision; the weakly typed FP16/INT8 builder flags are gone in 11.
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
            raise UserError(f"TensorRT cannot parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        if self.workspace_mb:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        if precision == "fp32":
            config.clear_flag(trt.BuilderFlag.TF32)      # on by default from Ampere (Orin too): fp32 means fp32
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        # Layer timings survive across builds (same TensorRT + GPU only: that's in the file name).
        cache = self._timing_cache(config, timing)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            warnings.warn(f"TensorRT did not take the timing cache {timing}; building without it", stacklevel=2)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise UserError("TensorRT could not build the engine (its log above says why)")
        updated = config.get_timing_cache()
        if updated is not None:
            timing.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(timing, bytes(updated.serialize()))
        return bytes(plan)

    @staticmethod
    def _timing_cache(config, timing: Path):
        """The saved timing cache, or a fresh one when it is missing or unreadable (then rebuilt)."""
        saved = timing.read_bytes() if timing.is_file() else b""
        cache = config.create_timing_cache(saved) if saved else None
        if saved and cache is None:
            warnings.warn(f"ignoring the corrupt TensorRT timing cache {timing}; it is rebuilt", stacklevel=3)
        cache = cache if cache is not None else config.create_timing_cache(b"")
        if cache is None:
            raise UserError("TensorRT could not create a timing cache (its log above says why)")
        return cache

    def load(self, path: Path, threads: int | None = None) -> Runner:
        # threads: CPU targets use it; a GPU engine has nothing to set.
        trt, cuda = _import_runtime()
        plan, meta = read_engine(artifact.open(path, self.name, trt.__version__).file(ENGINE))
        gpu, cc, sms = _gpu(cuda, self.device)
        check_engine_identity(meta, trt.__version__, gpu, cc, sms, path)
        return TensorRTRunner(trt, cuda, plan, self.device)


class TensorRTRunner(Runner):
    """Device buffers sized for the profile's max batch, allocated once; freed on close()."""

    def __init__(self, trt, cuda, plan: bytes, device: int):
        self._cuda, self._buffers, self._engine = cuda, {}, None
        # The primary context is the one the CUDA runtime inside TensorRT uses: share it, don't make another.
        self._ctx = cuda.Device(device).retain_primary_context()
        try:
            with self._active():
                self._setup(trt, plan)
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _active(self):
        self._ctx.push()
        try:
            yield
        finally:
            self._ctx.pop()

    def _setup(self, trt, plan: bytes) -> None:
        cuda = self._cuda
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise UserError("TensorRT could not deserialize the engine (its log above says why)")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._output = "logits" if "logits" in outputs else outputs[0]
        lo, _, hi = (tuple(s) for s in self._engine.get_tensor_profile_shape(INPUT, 0))
        self._batch_range, self._item_shape = (lo[0], hi[0]), hi[1:]
        if not self._context.set_input_shape(INPUT, hi):     # so output shapes below are the largest batch's
            raise UserError(f"TensorRT refused the profile's own max shape {hi}: the engine is unusable")
        self._stream = cuda.Stream()
        self._host = {}
        for name in [INPUT, *outputs]:
            shape = hi if name == INPUT else tuple(self._context.get_tensor_shape(name))
            self._host[name] = cuda.pagelocked_empty(shape, trt.nptype(self._engine.get_tensor_dtype(name)))
            self._buffers[name] = cuda.mem_alloc(self._host[name].nbytes)
            self._context.set_tensor_address(name, int(self._buffers[name]))

    @property
    def max_batch(self) -> int:
        return self._batch_range[1]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Any batch size: served in chunks the profile takes (bench's accuracy step feeds 100 at once)."""
        batch = np.asarray(batch)
        if tuple(batch.shape[1:]) != tuple(self._item_shape):
            raise UserError(f"batch items are {tuple(batch.shape[1:])}, the engine takes {tuple(self._item_shape)}")
        return np.concatenate([self._infer_chunk(c) for c in self.chunks(batch)])

    def _infer_chunk(self, chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        # A tail below the profile's min batch is padded up to it; the padding's outputs are dropped.
        padded = max(n, self._batch_range[0])
        host_in, host_out = self._host[INPUT][:padded], self._host[self._output][:padded]
        host_in[:n] = chunk                      # into pinned memory (and the engine's input dtype)
        host_in[n:] = 0
        cuda = self._cuda
        with self._active():
            if not self._context.set_input_shape(INPUT, host_in.shape):
                raise RuntimeError(f"TensorRT refused input shape {host_in.shape} inside its own profile")
            cuda.memcpy_htod_async(self._buffers[INPUT], host_in, self._stream)
            if not self._context.execute_async_v3(stream_handle=self._stream.handle):
                raise RuntimeError("TensorRT execution failed (its log above says why)")
            cuda.memcpy_dtoh_async(host_out, self._buffers[self._output], self._stream)
            self._stream.synchronize()
        return host_out[:n].astype(np.float32, copy=True)

    def close(self) -> None:
        if self._ctx is None:
            return
        with self._active():                     # TensorRT objects and buffers go while their context is current
            for buf in self._buffers.values():
                buf.free()
            self._buffers.clear()
            self._host = self._stream = self._context = self._engine = self._runtime = None
        self._ctx.detach()
        self._ctx = None
