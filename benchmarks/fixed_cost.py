"""The WAE's fixed cost at small sizes: what the runtimes' settings and a fused encoder head change.

    PYTHONPATH=. .venv/bin/python benchmarks/fixed_cost.py [--min-time 2]   -> benchmarks/fixed-cost.json

At batch 1, FP32, on the reference CIFAR-10 and Imagenette WAEs and their baselines, each group
timed interleaved (ratios within one group are what count):
  - ONNX Runtime graph optimisation level: all (the product's), extended, basic;
  - OpenVINO: the product's LATENCY hint with 1 stream and all cores, the same on 1 thread, and no hints;
  - the encoder's two stride-2 heads (decomposer.low, decomposer.high: same input, 3 outputs each)
    as one 6-output convolution and a Split: the same arithmetic in one node fewer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from wae_deploy.benchmark.environment import fingerprint
from wae_deploy.runtime.latency import measure_interleaved
from wae_deploy.training.export import export

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"cifar10": ("models/wae-resnet20.pt", "models/resnet20.pt"),
          "imagenette": ("models/wae-vgg16-imagenette.pt", "models/vgg16-imagenette.pt")}


def fuse_encoder_heads(model: onnx.ModelProto) -> onnx.ModelProto:
    """decomposer.low/Conv and decomposer.high/Conv (same input and attributes) -> one Conv + Split."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    low = next(n for n in g.node if n.name == "decomposer.low/Conv")
    high = next(n for n in g.node if n.name == "decomposer.high/Conv")
    assert low.input[0] == high.input[0] and low.attribute == high.attribute
    inits = {t.name: t for t in g.initializer}
    w = np.concatenate([numpy_helper.to_array(inits[n.input[1]]) for n in (low, high)])
    b = np.concatenate([numpy_helper.to_array(inits[n.input[2]]) for n in (low, high)])
    g.initializer.extend([numpy_helper.from_array(w, "decomposer.heads.weight"),
                          numpy_helper.from_array(b, "decomposer.heads.bias"),
                          numpy_helper.from_array(np.array([3, 3], np.int64), "decomposer.heads.split")])
    conv = helper.make_node("Conv", [low.input[0], "decomposer.heads.weight", "decomposer.heads.bias"],
                            ["decomposer.heads"], name="decomposer.heads/Conv")
    conv.attribute.extend(low.attribute)
    split = helper.make_node("Split", ["decomposer.heads", "decomposer.heads.split"], [low.output[0], high.output[0]],
                             name="decomposer.heads/Split", axis=1)
    at = list(g.node).index(low)
    g.node.remove(low)
    g.node.remove(high)
    g.node.insert(at, split)
    g.node.insert(at, conv)
    for t in [t for t in g.initializer if t.name in (low.input[1], low.input[2], high.input[1], high.input[2])]:
        g.initializer.remove(t)
    return model


def ort_session(path, level: str, threads: int):
    import onnxruntime as ort

    from wae_deploy.runtime.backends.onnxruntime import session_options

    opts = session_options(threads)
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{level.upper()}")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ov_request(path, config: dict):
    import openvino as ov

    return ov.Core().compile_model(str(path), "CPU", config).create_infer_request()


def time_group(calls: dict, min_time: float) -> dict:
    stats = measure_interleaved(calls, min_time_s=min_time, max_time_s=4 * min_time, min_iters=30)
    return {k: round(s.median_ms, 4) for k, s in stats.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/fixed-cost.json"))
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="wae-fixed-cost-"))
    results = {}
    for suite, (wae, base) in MODELS.items():
        paths = {}
        for ckpt in (wae, base):
            name = Path(ckpt).stem
            paths[name] = export(ROOT / ckpt, work / f"{name}.onnx", verify=0, log=lambda *_: None).path
        wname = Path(wae).stem
        fused = work / f"{wname}-fused-heads.onnx"
        onnx.save(fuse_encoder_heads(onnx.load(str(paths[wname]))), fused)
        size = onnx.load(str(paths[wname])).graph.input[0].type.tensor_type.shape.dim[2].dim_value
        x = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
        row = {}

        sessions = {f"{n} ort {lvl}": ort_session(p, lvl, threads) for n, p in paths.items()
                    for lvl in ("all", "extended", "basic")}
        row["ort optimisation level"] = time_group(
            {k: (lambda s=s, x=x: s.run(None, {"images": x})) for k, s in sessions.items()}, args.min_time)

        configs = {"latency 1 stream": {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                                        "INFERENCE_NUM_THREADS": str(threads)},
                   "latency 1 thread": {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                                        "INFERENCE_NUM_THREADS": "1"},
                   "no hints": {}}
        requests = {f"{n} ov {c}": ov_request(p, {"INFERENCE_PRECISION_HINT": "f32", **cfg})
                    for n, p in paths.items() for c, cfg in configs.items()}
        row["openvino settings"] = time_group({k: (lambda r=r, x=x: r.infer({0: x})) for k, r in requests.items()},
                                              args.min_time)

        ref = ort_session(paths[wname], "all", threads).run(None, {"images": x})[0]
        got = ort_session(fused, "all", threads).run(None, {"images": x})[0]
        heads = {"separate heads ort": ort_session(paths[wname], "all", threads),
                 "fused heads ort": ort_session(fused, "all", threads)}
        calls = {k: (lambda s=s, x=x: s.run(None, {"images": x})) for k, s in heads.items()}
        for k, p in (("separate heads ov", paths[wname]), ("fused heads ov", fused)):
            r = ov_request(p, {"INFERENCE_PRECISION_HINT": "f32", **configs["latency 1 stream"]})
            calls[k] = lambda r=r, x=x: r.infer({0: x})
        row["encoder heads"] = time_group(calls, args.min_time)
        row["encoder heads"]["max_abs_logit_difference"] = float(np.abs(ref - got).max())
        results[suite] = row
        print(suite, json.dumps(row, indent=1), flush=True)
    out = {"what": "batch-1 FP32 medians in ms; each group timed interleaved on this machine (shared with other "
                   "jobs: compare within a group only)",
           "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "machine": platform.node(),
           "results": results, "environment": fingerprint(threads)}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
