"""INT8 top-1 of the reference WAE-ResNet-20 on the whole CIFAR-10 test split, by build policy.

    .venv/bin/python benchmarks/int8_accuracy.py        -> benchmarks/int8-accuracy.json
Goal (issues 4 and 5): INT8 within 0.5 point of FP32. Policies: NNCF defaults; the WAE's thin
parts (encoder, high-frequency branch) kept in float; and `wae-deploy build --max-accuracy-drop
0.5`, which tries those parts first and then NNCF's per-layer search on a 2,000-image sample
of the test split. The score below is on all 10,000 test images.
"""

import json
import shutil
import tempfile
from pathlib import Path

from wae_deploy.convert.build import build
from wae_deploy.convert.targets import get_target
from wae_deploy.runtime import onnx_meta
from wae_deploy.runtime.data import default_data_root, load_split
from wae_deploy.runtime.metrics import evaluate_runner
from wae_deploy.training.export import export

ROOT = Path(__file__).resolve().parent.parent

POLICIES = {"nncf defaults": {}, "encoder + high in float": {"keep_float": ("encoder", "high")},
            "--max-accuracy-drop 0.5": {"max_accuracy_drop": 0.5}}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="wae-int8-accuracy-"))
    onnx = export(ROOT / "models/wae-resnet20.pt", work / "wae-resnet20.onnx", log=lambda *_: None).path
    info = onnx_meta.read(onnx)
    test = load_split(default_data_root(info.preprocessing), "test", info.preprocessing)
    rows = {}
    for target in ("ort", "openvino"):
        build(onnx, target, "fp32", out=work / f"{target}-fp32", log=lambda *_: None)
        with get_target(target).load(work / f"{target}-fp32") as runner:
            fp32 = evaluate_runner(runner, test, info.preprocessing)["top1"]
        for name, kw in POLICIES.items():
            out = work / f"{target}-{len(rows)}"
            manifest = build(onnx, target, "int8", out=out, log=lambda *_: None, **kw).manifest
            with get_target(target).load(out) as runner:
                top1 = evaluate_runner(runner, test, info.preprocessing)["top1"]
            rows[f"{target} {name}"] = {"fp32_top1": fp32, "int8_top1": top1, "drop": round(fp32 - top1, 2),
                                        "met": fp32 - top1 <= 0.5, "executed": manifest["executed"],
                                        "build_steps": manifest.get("accuracy_bound", {}).get("steps"),
                                        "build_seconds": manifest.get("accuracy_bound", {}).get("seconds")}
            print(target, name, rows[f"{target} {name}"], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    from wae_deploy.benchmark.environment import fingerprint

    (ROOT / "benchmarks/int8-accuracy.json").write_text(json.dumps(
        {"what": "top-1 of models/wae-resnet20.pt on the 10,000 CIFAR-10 test images, FP32 and INT8 by policy "
                 "(calibration: 300 training images)",
         "command": "python benchmarks/int8_accuracy.py", "results": rows, "environment": fingerprint()},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
