"""Which INT8 recipe keeps 99% of FP32 on this CPU class, and at what speed?

    .venv/bin/python benchmarks/int8_isa.py [--models wae-vgg16-imagenette,vgg16-imagenette] [--out FILE]

For each reference model and CPU runtime: FP32, then INT8 built by NNCF with each recipe (the
overflow fix: 7-bit weights everywhere; parts of the WAE kept in float), each scored on all
val photos and on held-out training photos disjoint from the 300 calibration photos (what the
build's accuracy guard sees), then all timed interleaved at each --batches (speed-ups over FP32
from that one run). Default output: benchmarks/int8-isa-<cpu class>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from wae_deploy.benchmark.environment import fingerprint
from wae_deploy.convert.build import calibration_set
from wae_deploy.convert.targets import get_target
from wae_deploy.runtime import machine, onnx_meta
from wae_deploy.runtime.data import default_data_root, load_split
from wae_deploy.runtime.latency import measure_interleaved
from wae_deploy.runtime.metrics import evaluate_runner
from wae_deploy.training.export import export

ROOT = Path(__file__).resolve().parent.parent
# name -> (overflow fix, parts kept in float)
RECIPES = {
    "nncf default": (False, ()),
    "overflow fix": (True, ()),
    "overflow fix + encoder-first float": (True, ("encoder-first",)),
    "encoder float": (False, ("encoder",)),
    "overflow fix + encoder float": (True, ("encoder",)),
}
PLAIN = ("nncf default", "overflow fix")   # a model without an encoder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="wae-vgg16-imagenette,vgg16-imagenette")
    ap.add_argument("--targets", default="ort,openvino")
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--recipes", help="comma-separated names of RECIPES [default: all]")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--out")
    args = ap.parse_args()
    cls = machine.cpu_class(machine.cpu_flags())
    out_path = Path(args.out or ROOT / f"benchmarks/int8-isa-{cls}.json")
    work = Path(tempfile.mkdtemp(prefix="wae-int8-isa-"))
    record = {"what": "INT8 recipes by CPU class: top-1 on all val photos and on held-out train photos, "
                      "speed-up over FP32 at batch 1 (interleaved)",
              "command": "python benchmarks/int8_isa.py " + " ".join(sys.argv[1:]), "cpu_class": cls,
              "environment": fingerprint(), "results": {}}
    for name in args.models.split(","):
        onnx_path = work / f"{name}.onnx"
        export(ROOT / "models" / f"{name}.pt", onnx_path, verify=0, log=lambda s: None)
        spec = onnx_meta.read(onnx_path).preprocessing
        root = default_data_root(spec)
        calib, _ = calibration_set(spec, None, 300)
        held = load_split(root, "train", spec).sample(args.held_out, seed=0, skip=300)  # as the guard draws
        val = load_split(root, "test", spec)
        names = args.recipes.split(",") if args.recipes else list(RECIPES)
        recipes = {k: RECIPES[k] for k in names if "wae" in name or "dwt" in name or k in PLAIN}
        for target_name in args.targets.split(","):
            target = get_target(target_name)
            runners, rows = {}, {}
            for label, (fix, keep) in {"fp32": (False, ()), **recipes}.items():
                art = work / f"{name}-{target_name}-{len(runners)}"
                precision = "fp32" if label == "fp32" else "int8"
                kwargs = {"overflow_fix": fix} if precision == "int8" else {}
                target.build(onnx_path, precision, calib if precision == "int8" else None, art, keep_float=keep,
                             **kwargs)
                runner = target.load(art)
                rows[label] = {"val_top1": round(evaluate_runner(runner, val, spec)["top1"], 2),
                               "held_out_top1": round(evaluate_runner(runner, held, spec)["top1"], 2)}
                runners[label] = runner
                print(name, target_name, label, rows[label], flush=True)
            for batch in map(int, args.batches.split(",")):
                x = spec.normalize(val.images[:batch])
                stats = measure_interleaved({k: (lambda r=r, x=x: r.infer(x)) for k, r in runners.items()},
                                            batch=batch, min_time_s=args.min_time * len(runners), min_iters=20)
                for label, st in stats.items():
                    rows[label][f"batch {batch}"] = {
                        "median_ms": round(st.median_ms, 3),
                        "speedup_vs_fp32": round(stats["fp32"].median_ms / st.median_ms, 3)}
            for label in recipes:
                rows[label]["val_of_fp32"] = round(rows[label]["val_top1"] / rows["fp32"]["val_top1"], 4)
            record["results"][f"{name} {target_name}"] = rows
            print(json.dumps(rows, indent=1), flush=True)
            for r in runners.values():
                r.close()
            out_path.write_text(json.dumps(record, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
