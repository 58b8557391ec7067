"""Wall time of `wae-deploy export` and of an INT8 `wae-deploy build`, as a user runs them.

    .venv/bin/python benchmarks/command_speed.py        -> benchmarks/command-speed.json
Goals (issues 3 and 4): export + simplify + verify of a CIFAR model <= 10 s and of WAE-VGG16
<= 60 s; an INT8 build (NNCF calibration on 300 real images, runtime conversion, manifest)
of a CIFAR model <= 60 s and of WAE-VGG16 <= 3 min. Every run is a fresh process into a fresh
output (nothing cached); the median of the runs counts.
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


def timed(args: list[str], runs: int) -> list[float]:
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        subprocess.run([CLI, *[a.format(i=i) for a in args]], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def row(times: list[float], goal: float, **extra) -> dict:
    median = statistics.median(times)
    return {"seconds": [round(t, 2) for t in times], "median_s": round(median, 2), "goal_s": goal,
            "met": median <= goal, **extra}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="wae-command-speed-"))
    subprocess.run([sys.executable, "-c", "from wae_deploy import checkpoint as c; "
                    f"c.save(c.untrained('wae-vgg16'), '{work}/wae-vgg16.pt')"], check=True)
    models = {"wae-resnet20 (CIFAR reference)": (ROOT / "models/wae-resnet20.pt", 10.0, 60.0, 3),
              "resnet20 (CIFAR reference)": (ROOT / "models/resnet20.pt", 10.0, 60.0, 3),
              "wae-vgg16 (224x224, untrained)": (work / "wae-vgg16.pt", 60.0, 180.0, 2)}
    export, build = {}, {}
    for name, (ckpt, export_goal, build_goal, runs) in models.items():
        onnx = work / f"{ckpt.stem}-{{i}}.onnx"
        times = timed(["export", str(ckpt), "-o", str(onnx)], runs)
        manifest = json.loads((work / f"{ckpt.stem}-0.json").read_text())
        export[name] = row(times, export_goal, inside_export_s=manifest["seconds"], parity=manifest["parity"],
                           nodes=[manifest["nodes_before"], manifest["nodes_after"]], bytes=manifest["bytes"])
        print("export", name, export[name], flush=True)
        for target in ("ort", "openvino"):
            out = work / f"{ckpt.stem}-{target}-int8-{{i}}"
            times = timed(["build", str(work / f"{ckpt.stem}-0.onnx"), "--target", target, "--precision", "int8",
                           "-o", str(out)], runs)
            build[f"{name} {target} int8"] = row(times, build_goal)
            print("build", name, target, build[f"{name} {target} int8"], flush=True)
    from wae_deploy.benchmark.environment import fingerprint

    (ROOT / "benchmarks/command-speed.json").write_text(json.dumps(
        {"what": "wall time of `wae-deploy export CKPT -o OUT` (process start, export, onnxslim, ONNX Runtime "
                 "parity on 64 real images) and `wae-deploy build OUT.onnx --target T --precision int8 -o DIR` "
                 "(NNCF on 300 real calibration images), each in a fresh process",
         "command": "python benchmarks/command_speed.py", "export": export, "build_int8": build,
         "environment": fingerprint()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
