"""TEST01 on every reference artifact: both suites, ONNX Runtime and OpenVINO, FP32 and INT8.

    PYTHONPATH=. .venv/bin/python benchmarks/mlperf_test01.py [--eval-size 500]
        -> benchmarks/mlperf-test01-<cpu class>.json

Runs the command a user runs, once per suite, target and precision (8 runs, 40 cells):

    wae-deploy bench --suite S --target T --precision P --batch 1 --scenario singlestream \\
        --audit test01 --eval-size N --workdir build/audits --out build/audits/S-T-P.json

A run whose results file exists is not repeated (the session can end at any time: run it again to
go on). Each cell records LoadGen's verdict, TEST01's outcome (outputs checked, bitwise equal,
largest difference; its performance part, the audit run's early-stopping p90 over the performance
run's, which binds only official-length runs) and LoadGen's top-1 beside the harness's on the same photos. LoadGen's own
logs stay in build/audits/ (megabytes; not committed).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from wae_deploy.benchmark.environment import fingerprint
from wae_deploy.runtime.machine import host_cpu_class

ROOT = Path(__file__).resolve().parent.parent
RUNS = [(suite, target, precision) for suite in ("cifar10", "imagenette") for target in ("ort", "openvino")
        for precision in ("fp32", "int8")]


def command(suite: str, target: str, precision: str, eval_size: int, out: Path) -> list[str]:
    return ["wae-deploy", "bench", "--suite", suite, "--target", target, "--precision", precision, "--batch", "1",
            "--scenario", "singlestream", "--audit", "test01", "--eval-size", str(eval_size),
            "--workdir", "build/audits", "--out", str(out.relative_to(ROOT))]


def cell(entry: dict, suite: str) -> dict:
    audit = entry["audits"]["TEST01"]
    return {"suite": suite, "model": entry["model"], "target": entry["target"], "precision": entry["precision"],
            "validity": entry["performance"]["validity"], "test01_passed": audit["passed"],
            "test01_why": audit["why"], "outputs_checked": audit["checked"],
            "bitwise_equal": audit["bitwise_equal"], "max_abs_diff": audit["max_abs_diff"],
            "performance_ratio": (audit.get("performance") or {}).get("ratio"),
            "loadgen_top1": entry["accuracy"]["top1"], "harness_top1": entry["harness_accuracy"]["top1"],
            "accuracy_matches_harness": entry["accuracy_matches_harness"], "photos": entry["accuracy"]["n"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval-size", type=int, default=500)
    args = ap.parse_args()
    work = ROOT / "build" / "audits"
    work.mkdir(parents=True, exist_ok=True)
    cells, commands = [], []
    wae_deploy = str(Path(sys.executable).parent / "wae-deploy")
    for suite, target, precision in RUNS:
        out = work / f"{suite}-{target}-{precision}.json"
        cmd = command(suite, target, precision, args.eval_size, out)
        commands.append(shlex.join(cmd))
        if not out.exists():
            print("$", shlex.join(cmd), flush=True)
            # exit 1 is a failed audit or an INVALID run: the results are written all the same
            proc = subprocess.run([wae_deploy, *cmd[1:]], cwd=ROOT)
            if proc.returncode not in (0, 1) or not out.exists():
                sys.exit(f"error: {shlex.join(cmd)} exited {proc.returncode}")
        cells += [cell(e, suite) for e in json.loads(out.read_text())["loadgen"]]
    cpu = host_cpu_class() or "unknown"
    summary = {"what": "MLPerf TEST01 (accuracy in performance mode) on every reference artifact",
               "command": "PYTHONPATH=. .venv/bin/python benchmarks/mlperf_test01.py " + shlex.join(sys.argv[1:]),
               "runs": commands,
               "host": {"node": platform.node(), "cpu_class": cpu, "cpu": fingerprint(None)["cpu"].get("model")},
               "cells": cells, "cells_passed": sum(c["test01_passed"] for c in cells),
               "all_passed": all(c["test01_passed"] and c["validity"] == "VALID" for c in cells),
               "all_accuracy_equal": all(c["accuracy_matches_harness"] for c in cells)}
    path = ROOT / "benchmarks" / f"mlperf-test01-{cpu}.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"TEST01 passed in {summary['cells_passed']} of {len(cells)} cells; LoadGen top-1 equal to the "
          f"harness's in all: {summary['all_accuracy_equal']}; wrote {path}")


if __name__ == "__main__":
    main()
