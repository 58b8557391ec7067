"""LoadGen's SingleStream p90 against the harness's own p90, on the same ORT artifact and machine.

    PYTHONPATH=. .venv/bin/python benchmarks/loadgen_p90.py [--model models/wae-vgg16-imagenette.pt]
        [--threads 1] [--min-time 3] [--rounds 20]       -> benchmarks/loadgen-p90-<cpu class>.json

The checkpoint is exported and built for ONNX Runtime FP32 once (in build/loadgen-p90/); one runner
is then timed ROUNDS times each way, the order alternating (harness first, then LoadGen first, ...),
so a machine that drifts slows both alike. The blocks are short on purpose: on a shared VM the speed
drifts by 10-30% between 15-second windows (seen on the avx2 host), which three long rounds cannot
cancel; twenty short pairs, each ratio taken within its pair, and their median can.
  - the harness: runtime.latency.measure_interleaved on one photo, batch 1, `--min-time` seconds;
  - LoadGen: a SingleStream performance run of `--min-time` seconds over the photos (benchmark.loadgen's
    system under test, as `bench --scenario singlestream` runs it; no accuracy run, no audits).
LoadGen's latency runs from its issuing a query to the response, so it also holds LoadGen's and the
Python binding's own time per query; the goal (issue 24) is a p90 within 5% of the harness's.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from pathlib import Path

from wae_deploy import build, export
from wae_deploy.benchmark import loadgen, mlperf_logs
from wae_deploy.benchmark.environment import fingerprint
from wae_deploy.convert.targets import target_class
from wae_deploy.runtime.data import default_data_root, load_split
from wae_deploy.runtime.latency import measure_interleaved, ratio_ci
from wae_deploy.runtime.machine import host_cpu_class

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.05


def harness_p90(runner, library, min_time: float) -> float:
    x = library.inputs[:1]
    stats = measure_interleaved({"ort": lambda: runner.infer(x)}, batch=1, min_time_s=min_time,
                                max_time_s=min_time * 2, min_iters=100)
    return stats["ort"].p90_ms


def loadgen_p90(lg, runner, library, min_time: float, folder: Path) -> dict:
    cfg = loadgen.LoadgenConfig("singlestream", folder, min_time_s=min_time)
    system = loadgen.SystemUnderTest(lg, runner.infer, library, 1)
    call_s = loadgen.expected_call_s(runner.infer, library, 1)
    run = mlperf_logs.read_run(loadgen.run_test(lg, system, loadgen.settings(lg, cfg, "performance", call_s), folder))
    return run.result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/wae-vgg16-imagenette.pt")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--photos", type=int, default=500)
    args = ap.parse_args()
    work = ROOT / "build" / "loadgen-p90"
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = export(ROOT / args.model, work / (Path(args.model).stem + ".onnx")).path
    art = build(onnx_path, "ort", "fp32", work / "artifact")
    photos = load_split(default_data_root(art.preprocessing), "test", art.preprocessing).sample(args.photos, seed=1)
    library = loadgen.SampleLibrary(photos, art.preprocessing)
    lg = loadgen.loadgen_module()
    runner = target_class("ort")().load(art.path, args.threads)
    rounds = []
    try:
        for i in range(args.rounds):
            order = ("harness", "loadgen") if i % 2 == 0 else ("loadgen", "harness")
            row = {"order": list(order)}
            for who in order:
                if who == "harness":
                    row["harness_p90_ms"] = harness_p90(runner, library, args.min_time)
                else:
                    row["loadgen"] = loadgen_p90(lg, runner, library, args.min_time, work / f"round{i}")
            row["ratio"] = (row["loadgen"]["p90_ms"] / row["harness_p90_ms"]
                            if row["loadgen"]["validity"] == "VALID" else None)
            print(json.dumps(row), flush=True)
            rounds.append(row)
    finally:
        runner.close()
    valid = [r for r in rounds if r["ratio"] is not None]
    ci = ratio_ci([r["loadgen"]["p90_ms"] for r in valid], [r["harness_p90_ms"] for r in valid]) if valid else None
    median = ci.ratio if ci else None
    cpu = host_cpu_class() or "unknown"
    out = {"what": "LoadGen SingleStream p90 / harness p90, same ORT FP32 artifact, batch 1, rounds interleaved",
           "command": "PYTHONPATH=. .venv/bin/python benchmarks/loadgen_p90.py " + shlex.join(sys.argv[1:]),
           "host": {"node": platform.node(), "cpu_class": cpu,
                    "cpu": fingerprint(args.threads)["cpu"].get("model")},
           "model": args.model, "threads": args.threads, "min_time_s": args.min_time, "photos": len(library),
           "rounds": rounds, "valid_rounds": len(valid), "median_ratio": median,
           "median_ratio_95ci": [ci.low, ci.high] if ci else None,
           "goal": f"LoadGen's p90 within {GOAL:.0%} of the harness's",
           "median_within_goal": None if median is None else abs(median - 1) <= GOAL,
           "ci_within_goal": None if ci is None else (abs(ci.low - 1) <= GOAL and abs(ci.high - 1) <= GOAL)}
    path = ROOT / "benchmarks" / f"loadgen-p90-{cpu}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"median LoadGen/harness p90 {median} (95% interval {out['median_ratio_95ci']}); wrote {path}")


if __name__ == "__main__":
    main()
