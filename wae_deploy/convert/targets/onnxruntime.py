"""ONNX Runtime builder: FP32 with full graph optimisation, INT8 as an NNCF Q/DQ model with no weight
dequantized on every call (runtime.backends.onnxruntime loads what it writes)."""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from wae_deploy.convert.targets.base import Target
from wae_deploy.core import atomic
from wae_deploy.runtime import artifact, onnx_meta
from wae_deploy.runtime.artifact import Artifact
from wae_deploy.runtime.backends.onnxruntime import MODEL, OnnxRuntimeBackend, session_options
from wae_deploy.runtime.data import ImageSet

INT8_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul")
FLOAT_OPS = ("Conv", "FusedConv", "Gemm", "MatMul", "FusedGemm", "NchwcConv", "FusedMatMul")


def optimized_model(model_path: Path):
    """ORT's own optimised graph of `model_path` (an onnx.ModelProto): what a session really runs."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        optimized = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(str(model_path), session_options(1, optimized), providers=["CPUExecutionProvider"])
        return onnx.load(optimized)


def executed_precisions(model_path: Path) -> dict:
    """What ORT really runs, read from its own optimised graph: every weighted layer (convolutions,
    Gemm, MatMul) counted by kind, and the weights it dequantizes on every call.

    A Q/DQ pair around a Conv that ORT fuses becomes QLinearConv (INT8); a Conv left in the
    optimised graph runs in FP32, and a DequantizeLinear still feeding one turns an INT8 weight
    back into FP32 on every call. Counting after optimisation is the only honest answer.
    """
    from wae_deploy.convert.qdq import weight_only_layers

    graph = optimized_model(model_path)
    ops = Counter(n.op_type for n in graph.graph.node)
    return {"int8_ops": {k: v for k, v in ops.items() if k in INT8_OPS},
            "float_ops": {k: v for k, v in ops.items() if k in FLOAT_OPS},
            "weight_dequantized_per_call": sorted(weight_only_layers(graph, any_activation=True))}


def _session(model, threads: int | None = None):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


def activation_ranges(model, tensors: dict[str, str], calib: ImageSet, spec, batch: int = 16) -> dict:
    """{key: (min, max)} of each named float tensor of `model` over the calibration images."""
    import onnx

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    names = sorted(set(tensors.values()))
    probe.graph.output.extend([onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names])
    sess = _session(probe)
    lo, hi = dict.fromkeys(names, np.inf), dict.fromkeys(names, -np.inf)
    feed = sess.get_inputs()[0].name
    for i in range(0, len(calib), batch):
        outs = sess.run(names, {feed: spec.normalize(calib.images[i:i + batch])})
        for n, v in zip(names, outs):
            lo[n], hi[n] = min(lo[n], float(v.min())), max(hi[n], float(v.max()))
    return {k: (lo[t], hi[t]) for k, t in tensors.items()}


def repair_weight_only(model, calib: ImageSet, spec, log=lambda line: None) -> tuple[object, dict]:
    """No weight dequantized on every call: each weight-only layer of NNCF's Q/DQ `model` (qdq.py) gets
    the repair int8_policy.pick_repair chooses from the timings here (weight folded to FP32, or
    activation quantized).

    Returns the repaired model and {layer: {"choice", "ms_batch1": {candidate: median ms}, "activation_range"}}
    for the manifest. A candidate after which ORT still dequantizes the weight is not timed.
    """
    from wae_deploy.convert.int8_policy import WEIGHT_ONLY_REPAIRS, pick_repair
    from wae_deploy.convert.qdq import activation_inputs, weight_only_layers
    from wae_deploy.runtime.latency import measure_interleaved

    def per_call(m) -> set[str]:
        with tempfile.TemporaryDirectory() as tmp:
            import onnx

            onnx.save(m, os.path.join(tmp, "m.onnx"))
            return set(weight_only_layers(optimized_model(os.path.join(tmp, "m.onnx")), any_activation=True))

    layers = sorted(per_call(model) & {n.name for n in model.graph.node})
    if not layers:
        return model, {}
    ranges = activation_ranges(model, activation_inputs(model, layers), calib, spec)
    x = spec.normalize(calib.images[:1])
    choices = {}
    for layer in layers:
        candidates = {k: _repaired(model, layer, k, ranges[layer]) for k in WEIGHT_ONLY_REPAIRS}
        candidates = {k: m for k, m in candidates.items() if layer not in per_call(m)}
        sessions = {k: _session(m) for k, m in candidates.items()}
        feed = {next(iter(sessions.values())).get_inputs()[0].name: x}
        stats = measure_interleaved({k: (lambda s=s, f=feed: s.run(None, f)) for k, s in sessions.items()},
                                    min_iters=10, min_time_s=1.0, max_time_s=10.0)
        ms = {k: round(v.median_ms, 3) for k, v in stats.items()}
        pick = pick_repair(ms)
        model = candidates[pick]
        choices[layer] = {"choice": pick, "ms_batch1": ms, "activation_range": [round(v, 6) for v in ranges[layer]]}
        log(f"  {layer}: weight was dequantized on every call; {pick} "
            f"({', '.join(f'{k} {v:.2f} ms' for k, v in ms.items())})")
    return model, choices


def _repaired(model, layer: str, repair: str, activation_range: tuple[float, float]):
    """A copy of `model` with `layer` repaired the named way (int8_policy.WEIGHT_ONLY_REPAIRS): qdq's graph edit."""
    from wae_deploy.convert.qdq import fold_weights, quantize_activations

    edits = {"fold-weight": lambda: fold_weights(model, [layer]),
             "quantize-activation": lambda: quantize_activations(model, {layer: activation_range})}
    return edits[repair]()


class OnnxRuntimeTarget(OnnxRuntimeBackend, Target):
    accuracy_control = True

    def build(self, onnx_path: Path, precision: str, calib: ImageSet | None, out: Path,
              keep_float: tuple[str, ...] = (), meta: dict | None = None,
              accuracy_control: tuple[ImageSet, float] | None = None, overflow_fix: bool = False) -> Artifact:
        import onnx

        t0 = time.perf_counter()
        details = {}
        model = onnx_meta.load_model(onnx_path)
        info = onnx_meta.from_model(model, str(onnx_path))
        control = False
        if precision == "int8":
            from wae_deploy.convert.quantize import quantize, quantize_to_bound

            name = model.graph.input[0].name
            if accuracy_control:
                model, control = quantize_to_bound(model, calib, info.preprocessing, *accuracy_control, keep_float,
                                                   input_name=name, overflow_fix=overflow_fix)
            else:
                model = quantize(model, calib, info.preprocessing, keep_float, input_name=name,
                                 overflow_fix=overflow_fix)
            model, details["weight_only"] = repair_weight_only(model, calib, info.preprocessing)
            onnx_meta.write(model, info)  # NNCF keeps metadata on most versions; make sure
        with atomic.atomic_dir(out) as tmp:
            onnx.save(model, str(tmp / MODEL))
            manifest = artifact.new_manifest(
                onnx_path, info, self.name, precision, self.version(), **(meta or {}),
                executed=executed_precisions(tmp / MODEL), keep_float=list(keep_float),
                accuracy_control=control, build_seconds=round(time.perf_counter() - t0, 2), details=details)
            return artifact.write(tmp, out, manifest)
