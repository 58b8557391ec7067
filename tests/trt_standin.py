"""Strict stand-ins for `tensorrt` (10.3 and 11.x) and `pycuda.driver`, for machines without a GPU.

Only the names the real bindings define are here, with the bindings' keyword names, so a call the
real module would reject fails here too (AttributeError, TypeError). Read from NVIDIA/TensorRT
python/src/infer/pyCore.cpp, python/src/parsers/pyOnnx.cpp and
python/packaging/bindings_wheel/tensorrt/__init__.py on release/10.3 and release/11.1; only the
subset wae-deploy uses is modelled. Semantics kept from the real API:
  - set_input_shape returns False outside the profile;
  - execute_async_v3 returns False unless an input shape is set and every I/O tensor has an address;
  - set_optimization_profile_async switches profile (on the given stream) and, stricter than the
    docs say, forgets the input shapes, so code must set them again after a switch;
  - the engine inspector gives layer information as JSON (DETAILED) or names only;
  - 11.x has no FP16/INT8 builder flags (nor EXPLICIT_BATCH); a strongly typed network with them
    set fails to build on 10.3, as TensorRT refuses it;
  - the builder and runtime need a current CUDA context (pycuda's context stack below).
The "engine" runs the ONNX it was built from with onnxruntime, on the "device" memory pycuda's
stand-in allocates, so outputs are real and the copies in and out are exercised.
"""

from __future__ import annotations

import base64
import enum
import itertools
import json
import sys
import types

import numpy as np
import onnx
import onnxruntime as ort

TIMING_MAGIC = b"STANDIN-TIMING-1"


class _Memory:
    """Device memory: address -> bytearray; the context stack is the current thread's."""

    def __init__(self):
        # allocations 4 GiB apart, so no two overlap whatever their size
        self.blocks, self.next, self.contexts = {}, itertools.count(1 << 32, 1 << 32), []

    def region(self, address: int, nbytes: int) -> memoryview:
        for base, block in self.blocks.items():
            if base <= address and address + nbytes <= base + len(block):
                return memoryview(block)[address - base:address - base + nbytes]
        raise RuntimeError(f"illegal memory access at {address:#x} ({nbytes} bytes)")

    def require_context(self, what: str) -> None:
        if not self.contexts:
            raise RuntimeError(f"{what}: no current CUDA context")


# ---------------------------------------------------------------- pycuda.driver

def make_pycuda(memory: _Memory, gpus=(("NVIDIA Jetson AGX Orin", (8, 7), 16),)) -> types.ModuleType:
    cuda = types.ModuleType("pycuda.driver")
    state = {"init": False}

    def init():
        state["init"] = True

    class device_attribute(enum.Enum):   # noqa: N801 (pycuda's spelling)
        MULTIPROCESSOR_COUNT = 16

    class Context:
        def __init__(self, device):
            self.device, self.detached = device, False

        def push(self):
            if self.detached:
                raise RuntimeError("push of a detached context")
            memory.contexts.append(self)

        @staticmethod
        def pop():
            if not memory.contexts:
                raise RuntimeError("cuCtxPopCurrent failed: no current context")
            memory.contexts.pop()

        def detach(self):
            self.detached = True

    class Device:
        def __init__(self, number):
            if not state["init"]:
                raise RuntimeError("cuInit has not been called")
            if not 0 <= number < len(gpus):
                raise RuntimeError("cuDeviceGet failed: invalid device ordinal")
            self.number = number

        @staticmethod
        def count():
            if not state["init"]:
                raise RuntimeError("cuInit has not been called")
            return len(gpus)

        def name(self):
            return gpus[self.number][0]

        def compute_capability(self):
            return gpus[self.number][1]

        def get_attribute(self, attrib):
            if attrib is not device_attribute.MULTIPROCESSOR_COUNT:
                raise TypeError(f"unsupported attribute {attrib!r}")
            return gpus[self.number][2]

        def retain_primary_context(self):
            return Context(self)

    class DeviceAllocation:
        def __init__(self, address):
            self.address = address

        def __int__(self):
            return self.address

        def free(self):
            memory.require_context("free")
            del memory.blocks[self.address]

    def mem_alloc(bytesize):
        memory.require_context("mem_alloc")
        address = next(memory.next)
        memory.blocks[address] = bytearray(bytesize)
        return DeviceAllocation(address)

    class Stream:
        def __init__(self, flags=0):
            memory.require_context("Stream")
            self.handle = 0xABC0

        def synchronize(self):
            pass

    def _stream(stream):
        if not isinstance(stream, Stream):
            raise TypeError("stream must be a pycuda Stream")

    def memcpy_htod_async(dest, src, stream=None):
        memory.require_context("memcpy_htod_async")
        _stream(stream)
        data = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        memory.region(int(dest), data.nbytes)[:] = data.tobytes()

    def memcpy_dtoh_async(dest, src, stream=None):
        memory.require_context("memcpy_dtoh_async")
        _stream(stream)
        if not dest.flags.c_contiguous:
            raise ValueError("dest must be contiguous")
        dest.view(np.uint8).reshape(-1)[:] = np.frombuffer(memory.region(int(src), dest.nbytes), np.uint8)

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        return np.empty(shape, dtype, order)

    for name, value in dict(locals()).items():
        if name in ("init", "device_attribute", "Context", "Device", "DeviceAllocation", "mem_alloc", "Stream",
                    "memcpy_htod_async", "memcpy_dtoh_async", "pagelocked_empty"):
            setattr(cuda, name, value)
    return cuda


# ---------------------------------------------------------------- tensorrt

_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
       "BOOL": np.bool_, "UINT8": np.uint8}
_ONNX_TO_TRT = {onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.FLOAT16: "HALF", onnx.TensorProto.INT64: "INT64"}


_FORMAT = {onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.FLOAT16: "FP16", onnx.TensorProto.INT8: "Int8"}


def _layers(model: onnx.ModelProto) -> list[dict]:
    """The engine's layers as DETAILED layer information reports them (keys as the real JSON has them).

    Q/DQ and Cast nodes fold into their neighbours; a layer fed by a DequantizeLinear runs in INT8,
    any other in its input's ONNX type (a strongly typed network keeps the ONNX types).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.value_info[:]        # recomputed below from the graph itself
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    types_ = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.value_info, *g.output]}
    types_.update({t.name: t.data_type for t in g.initializer})
    producer = {out: n for n in g.node for out in n.output}
    layers = []
    for node in g.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast", "Constant"):
            continue
        source = producer.get(node.input[0])
        kind = onnx.TensorProto.INT8 if source is not None and source.op_type == "DequantizeLinear" \
            else types_.get(node.input[0], onnx.TensorProto.FLOAT)
        tensor = {"Name": node.input[0], "Location": "Device",
                  "Format/Datatype": f"Row major linear {_FORMAT.get(kind, 'FP32')} format"}
        layers.append({"Name": node.name or node.output[0], "LayerType": node.op_type, "Inputs": [tensor],
                       "Outputs": [{"Name": node.output[0], "Location": "Device"}]})
    return layers


def make_tensorrt(version: str, memory: _Memory) -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    flags = ["BF16", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32", "SPARSE_WEIGHTS"]
    if major < 11:
        flags += ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    BuilderFlag = enum.Enum("BuilderFlag", flags)
    network_flags = ["EXPLICIT_BATCH", "STRONGLY_TYPED"] if major < 11 else ["STRONGLY_TYPED"]
    NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", {n: i for i, n in enumerate(network_flags)})
    MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "TACTIC_SHARED_MEMORY"])
    TensorIOMode = enum.Enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    ProfilingVerbosity = enum.Enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "DETAILED", "NONE"])
    LayerInformationFormat = enum.Enum("LayerInformationFormat", ["ONELINE", "JSON"])
    DataType = enum.Enum("DataType", list(_NP))

    def nptype(trt_type):
        return _NP[trt_type.name]

    class Logger:
        Severity = enum.Enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = Severity

        def __init__(self, min_severity=None):
            self.min_severity = min_severity

    class INetworkDefinition:
        def __init__(self, flags):
            self.strongly_typed = major >= 11 or bool(flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            self.onnx = None

    class ParserError:
        def __init__(self, text):
            self.text = text

        def desc(self):
            return self.text

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse(self, model, path=None):
            try:
                proto = onnx.load_from_string(bytes(model))
                onnx.checker.check_model(proto)
            except Exception as e:  # the real parser reports, it does not raise
                self.errors.append(ParserError(str(e)))
                return False
            self.network.onnx = bytes(model)
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

    class IOptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 (the bindings' keyword names)
            self.shapes[input] = [list(min), list(opt), list(max)]

    class ITimingCache:
        def __init__(self, entries):
            self.entries = entries

        def serialize(self):
            return memoryview(TIMING_MAGIC + json.dumps(self.entries).encode())

    class IBuilderConfig:
        def __init__(self):
            self.flags, self.pools, self.profiles, self.timing = {BuilderFlag.TF32}, {}, [], None
            self._verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY

        @property
        def profiling_verbosity(self):
            return self._verbosity

        @profiling_verbosity.setter
        def profiling_verbosity(self, value):
            self._verbosity = ProfilingVerbosity(value)

        @property
        def num_optimization_profiles(self):
            return len(self.profiles)

        def set_memory_pool_limit(self, pool, pool_size):
            self.pools[pool] = int(pool_size)

        def set_flag(self, flag):
            self.flags.add(BuilderFlag(flag))

        def clear_flag(self, flag):
            self.flags.discard(BuilderFlag(flag))

        def get_flag(self, flag):
            return flag in self.flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            data = bytes(serialized_timing_cache)
            if not data:
                return ITimingCache([])
            if not data.startswith(TIMING_MAGIC):
                return None         # TensorRT logs an error and returns a null cache
            return ITimingCache(json.loads(data[len(TIMING_MAGIC):]))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing = cache
            return True

        def get_timing_cache(self):
            return self.timing

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            memory.require_context("build_serialized_network")
            weak_flags = {f for f in config.flags if f.name in ("FP16", "INT8")}
            if network.onnx is None or not config.profiles or (network.strongly_typed and weak_flags):
                return None         # TensorRT logs why and returns None
            if config.timing is not None:
                config.timing.entries.append(len(config.timing.entries))
            plan = {"version": version, "onnx": base64.b64encode(network.onnx).decode(),
                    "profiles": [p.shapes for p in config.profiles], "tf32": BuilderFlag.TF32 in config.flags,
                    "verbosity": config.profiling_verbosity.name}
            return memoryview(b"STANDIN-PLAN" + json.dumps(plan).encode())

    class ICudaEngine:
        def __init__(self, plan):
            self.plan = plan
            self.model = onnx.load_from_string(base64.b64decode(plan["onnx"]))
            self.inputs = [i.name for i in self.model.graph.input]
            self.outputs = [o.name for o in self.model.graph.output]
            self.types = {vi.name: DataType[_ONNX_TO_TRT[vi.type.tensor_type.elem_type]]
                          for vi in [*self.model.graph.input, *self.model.graph.output]}
            self.layers = _layers(self.model)

        @property
        def num_optimization_profiles(self):
            return len(self.plan["profiles"])

        @property
        def num_layers(self):       # TensorRT 10+ reports every layer once per profile
            return len(self.layers) * self.num_optimization_profiles

        @property
        def profiling_verbosity(self):
            return ProfilingVerbosity[self.plan["verbosity"]]

        def create_engine_inspector(self):
            return EngineInspector(self)

        @property
        def num_io_tensors(self):
            return len(self.inputs) + len(self.outputs)

        def get_tensor_name(self, index):
            return [*self.inputs, *self.outputs][index]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return self.types[name]

        def get_tensor_profile_shape(self, name, profile_index):
            if not 0 <= profile_index < len(self.plan["profiles"]) or name not in self.plan["profiles"][0]:
                raise RuntimeError("invalid profile or tensor")
            return [tuple(s) for s in self.plan["profiles"][profile_index][name]]

        def create_execution_context(self, *args, **kwargs):
            return IExecutionContext(self)

    class IExecutionContext:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.profile = engine, {}, {}, 0
            self.runs = []          # (profile, batch) of each execution: not API, for the tests
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            self.session = ort.InferenceSession(engine.model.SerializeToString(), so,
                                                providers=["CPUExecutionProvider"])

        @property
        def active_optimization_profile(self):
            return self.profile

        def set_optimization_profile_async(self, profile_index, stream_handle):
            if not 0 <= profile_index < self.engine.num_optimization_profiles:
                raise RuntimeError("Error in set optimization profile async.")   # the bindings assert
            self.profile, self.shapes = profile_index, {}     # input shapes must be set again
            return True

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.get_tensor_profile_shape(name, self.profile)
            shape = tuple(int(d) for d in shape)
            if len(shape) != len(lo) or any(not a <= d <= b for a, d, b in zip(lo, shape, hi)):
                return False        # outside the profile: refused, not clamped
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            if name in self.engine.inputs:
                return self.shapes.get(name, (-1,) * 4)
            batch = self.shapes[self.engine.inputs[0]][0]
            dims = next(o for o in self.engine.model.graph.output if o.name == name).type.tensor_type.shape.dim
            return tuple(d.dim_value or batch for d in dims)

        def set_tensor_address(self, name, memory):  # noqa: F811 (the bindings' keyword name)
            self.addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle):
            io = [*self.engine.inputs, *self.engine.outputs]
            if set(self.shapes) != set(self.engine.inputs) or any(n not in self.addresses for n in io):
                return False
            feeds = {}
            for name in self.engine.inputs:
                dtype = nptype(self.engine.types[name])
                shape = self.shapes[name]
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                feeds[name] = np.frombuffer(memory.region(self.addresses[name], nbytes), dtype).reshape(shape)
            memory.require_context("execute_async_v3")
            self.runs.append((self.profile, self.shapes[self.engine.inputs[0]][0]))
            for name, value in zip(self.engine.outputs, self.session.run(self.engine.outputs, feeds)):
                value = np.ascontiguousarray(value, nptype(self.engine.types[name]))
                memory.region(self.addresses[name], value.nbytes)[:] = value.tobytes()
            return True

    class EngineInspector:
        def __init__(self, engine):
            self.engine, self._context = engine, None

        @property
        def execution_context(self):
            return self._context

        @execution_context.setter
        def execution_context(self, context):
            self._context = context

        def get_layer_information(self, layer_index, format):  # noqa: A002 (the bindings' keyword name)
            layer = self.engine.layers[layer_index % len(self.engine.layers)]
            detailed = self.engine.profiling_verbosity == ProfilingVerbosity.DETAILED
            info = layer if detailed else layer["Name"]
            if LayerInformationFormat(format) == LayerInformationFormat.JSON:
                return json.dumps(info)
            return str(info)

        def get_engine_information(self, format):  # noqa: A002
            return json.dumps({"Layers": [json.loads(self.get_layer_information(i, format))
                                          for i in range(len(self.engine.layers))]})

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            memory.require_context("deserialize_cuda_engine")
            data = bytes(serialized_engine)
            if not data.startswith(b"STANDIN-PLAN"):
                return None
            plan = json.loads(data[len(b"STANDIN-PLAN"):])
            return ICudaEngine(plan) if plan["version"] == version else None

    for name in ("BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "TensorIOMode", "DataType",
                 "ProfilingVerbosity", "LayerInformationFormat", "EngineInspector",
                 "nptype", "Logger", "OnnxParser", "Builder", "Runtime", "IBuilderConfig", "ITimingCache",
                 "IOptimizationProfile", "INetworkDefinition", "ICudaEngine", "IExecutionContext"):
        setattr(trt, name, locals()[name])
    return trt


def install(monkeypatch, version: str, gpus=None):
    """Put stand-in `tensorrt` and `pycuda.driver` into sys.modules; returns (trt, cuda, memory)."""
    memory = _Memory()
    cuda = make_pycuda(memory, **({"gpus": gpus} if gpus else {}))
    trt = make_tensorrt(version, memory)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    for name, mod in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", cuda)):
        monkeypatch.setitem(sys.modules, name, mod)
    return trt, cuda, memory
