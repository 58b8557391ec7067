"""WAE-VGG16 on ONNX Runtime: INT8 before and after removing the weight dequantized on every call.

    PYTHONPATH=. .venv/bin/python benchmarks/int8_weight_only.py [--work build/int8-weight-only] [--min-time 3]
        -> benchmarks/int8-weight-only.json

"before" is NNCF's Q/DQ model as it comes (the fusion head's first FC is weight-only: ORT turns
its INT8 weight back into FP32 on every call); "after" is the same model through
targets.onnxruntime.repair_weight_only (the same calibration, so the only difference is the
repair). Both are timed interleaved with the FP32 model at batch 1 and 8, and profiled.
Untrained weights (speed only); 64 calibration images.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import onnx

from wae_deploy.benchmark.environment import fingerprint
from wae_deploy.convert.build import calibration_set
from wae_deploy.convert.quantize import quantize
from wae_deploy.convert.targets import get_target
from wae_deploy.convert.targets.onnxruntime import executed_precisions, repair_weight_only
from wae_deploy.runtime import onnx_meta
from wae_deploy.runtime.latency import measure_interleaved
from wae_deploy.runtime.layer_profile import profile
from wae_deploy.training import checkpoint
from wae_deploy.training.export import export

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(ROOT / "build/int8-weight-only"))
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/int8-weight-only.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src = work / "wae-vgg16.onnx"
    if not src.is_file():
        checkpoint.save(checkpoint.untrained("wae-vgg16"), work / "wae-vgg16.pt")
        export(work / "wae-vgg16.pt", src, verify=0, log=lambda *_: None)
    info = onnx_meta.read(src)
    calib, _ = calibration_set(info.preprocessing, None, 64)
    before, after = work / "before.onnx", work / "after.onnx"
    if not before.is_file():
        model = onnx_meta.load_model(src)
        onnx.save(quantize(model, calib, info.preprocessing, (), input_name=model.graph.input[0].name), before)
    if not after.is_file():
        repaired, choices = repair_weight_only(onnx.load(str(before)), calib, info.preprocessing, log=print)
        onnx.save(repaired, after)
        (work / "choices.json").write_text(json.dumps(choices))
    choices = json.loads((work / "choices.json").read_text())
    paths = {"fp32": src, "int8 before": before, "int8 after": after}
    ort = get_target("ort")
    from wae_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner

    runners = {k: OnnxRuntimeRunner(p, None) for k, p in paths.items()}
    out = {"what": "WAE-VGG16 (untrained, 224 px) on ONNX Runtime: FP32, NNCF INT8 as it comes, and the same INT8 "
                   "model with its weight-only layers repaired; medians in ms, timed interleaved on this shared "
                   "machine",
           "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "runtime": ort.available()[1],
           "repair": choices, "executed": {k: executed_precisions(p) for k, p in paths.items() if k != "fp32"},
           "results": {}, "profiles": {}}
    for batch in (1, 8):
        x = np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32)
        stats = measure_interleaved({k: (lambda r=r, x=x: r.infer(x)) for k, r in runners.items()}, batch=batch,
                                    min_time_s=args.min_time, min_iters=10)
        med = {k: s.median_ms for k, s in stats.items()}
        out["results"][f"batch {batch}"] = {
            "median_ms": {k: round(v, 3) for k, v in med.items()},
            "int8_over_fp32": {k: round(med["fp32"] / med[k], 3) for k in ("int8 before", "int8 after")}}
        print(batch, out["results"][f"batch {batch}"], flush=True)
    for r in runners.values():
        r.close()
    for k in ("int8 before", "int8 after"):
        out["profiles"][k] = profile(paths[k], batch=1, runs=10).to_dict(top=8)
    out["environment"] = fingerprint()
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
