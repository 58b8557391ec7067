"""Export + simplify + verify wall time (issue goal: CIFAR model <= 10 s, WAE-VGG16 <= 60 s).

    .venv/bin/python benchmarks/export_speed.py        -> benchmarks/export-speed.json
Each model is exported three times in fresh processes (the CLI as a user runs it); the median counts.
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("wae-deploy"))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="wae-export-speed-"))
    subprocess.run([sys.executable, "-c", "from wae_deploy import checkpoint as c; "
                    f"c.save(c.untrained('wae-vgg16'), '{work}/wae-vgg16.pt')"], check=True)
    cases = {"wae-resnet20 (CIFAR reference)": (ROOT / "models/wae-resnet20.pt", 10.0),
             "resnet20 (CIFAR reference)": (ROOT / "models/resnet20.pt", 10.0),
             "wae-vgg16 (224x224, untrained)": (work / "wae-vgg16.pt", 60.0)}
    rows = {}
    for name, (ckpt, goal) in cases.items():
        times, manifest = [], None
        for i in range(3):
            out = work / f"{ckpt.stem}-{i}.onnx"
            t0 = time.perf_counter()
            subprocess.run([CLI, "export", str(ckpt), "-o", str(out)], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
            manifest = json.loads(out.with_suffix(".json").read_text())
        rows[name] = {"seconds": [round(t, 2) for t in times], "median_s": round(statistics.median(times), 2),
                      "goal_s": goal, "met": statistics.median(times) <= goal,
                      "inside_export_s": manifest["seconds"], "parity": manifest["parity"],
                      "nodes": [manifest["nodes_before"], manifest["nodes_after"]], "bytes": manifest["bytes"]}
        print(name, rows[name], flush=True)
    from wae_deploy.bench.environment import fingerprint

    (ROOT / "benchmarks/export-speed.json").write_text(json.dumps(
        {"what": "wall time of `wae-deploy export CKPT -o OUT` (process start, export, onnxslim, "
                 "ONNX Runtime parity on 64 real images), 3 runs each",
         "command": "python benchmarks/export_speed.py", "results": rows, "environment": fingerprint()},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
