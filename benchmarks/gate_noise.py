"""Does the CI gate raise false alarms, and what does it catch? Unchanged runs, compared.

    .venv/bin/python benchmarks/gate_noise.py      -> benchmarks/gate-noise.json, benchmarks/ci-cpu.json

1. Record a baseline (`--update`); it is also the one the CPU CI job compares against.
2. Run the same bench 12 times unchanged with `--compare`, as CI would: any exit 1 is a false alarm.
3. Compare every ordered pair of those 13 runs with the gate (156 pairs), unchanged and with
   planted regressions: the WAE models 1.3x and 1.5x slower (their speed-ups fall with them),
   and every model of one target and precision 1.5x and 2x slower.
"""

import copy
import json
import subprocess
import sys
from pathlib import Path

from wae_deploy.benchmark import gate

ROOT = Path(__file__).resolve().parent.parent

CLI = str(Path(sys.executable).with_name("wae-deploy"))
BENCH = [CLI, "bench", "--target", "ort", "--target", "openvino", "--precision", "fp32,int8",
         "--eval-size", "2000", "--min-time", "2", "--workdir", "build/gate-noise"]
RECORDED = "benchmarks/ci-cpu.json"  # relative: it is recorded in the results' command line
RUNS = ROOT / "build/gate-noise/runs"


def slower(results: dict, factor: float, which, baseline_too: bool = False) -> dict:
    """`results` with the latencies of the entries `which` selects `factor` times longer."""
    out = copy.deepcopy(results)
    for e in out["entries"]:
        if which(e):
            e["latency"] = {k: v * factor if k.endswith("_ms") and isinstance(v, float) else v
                            for k, v in e["latency"].items()}
            if e.get("speedup_vs_baseline") and not baseline_too:
                e["speedup_vs_baseline"] /= factor
    return out


def main(runs: int = 12) -> None:
    RUNS.mkdir(parents=True, exist_ok=True)
    subprocess.run(BENCH + ["--compare", RECORDED, "--update"], check=True, cwd=ROOT, capture_output=True)
    results = [json.loads((ROOT / RECORDED).read_text())]
    cli = []
    for i in range(runs):
        out = RUNS / f"run-{i + 1}.json"
        p = subprocess.run(BENCH + ["--compare", RECORDED, "--out", str(out)], cwd=ROOT, capture_output=True,
                           text=True)
        cli.append({"run": i + 1, "exit": p.returncode,
                    "failed_checks": [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("FAIL")]})
        print(cli[-1], flush=True)
        results.append(json.loads(out.read_text()))

    (ROOT / "benchmarks/gate-noise.json").write_text(json.dumps({
        "what": f"{runs} unchanged runs of `{' '.join(['wae-deploy'] + BENCH[1:])} --compare {RECORDED}` "
                "with the default (noise-derived) tolerances; then the gate over every ordered pair of the "
                f"{len(results)} runs, unchanged and with planted slow-downs",
        "command": "python benchmarks/gate_noise.py",
        "false_alarms": sum(o["exit"] != 0 for o in cli), "runs": cli, **pairwise(results)}, indent=2) + "\n")


def pairwise(results: list[dict]) -> dict:
    pairs = [(rec, cur) for rec in results for cur in results if rec is not cur]
    group = next((e["target"], e["precision"]) for e in results[0]["entries"])
    in_group = lambda e: (e["target"], e["precision"]) == group  # noqa: E731
    is_wae = lambda e: e["model"].startswith("wae")  # noqa: E731
    plants = {"unchanged": lambda r: r,
              "wae 1.3x slower": lambda r: slower(r, 1.3, is_wae),
              "wae 1.5x slower": lambda r: slower(r, 1.5, is_wae),
              f"all {' '.join(group)} 1.5x slower": lambda r: slower(r, 1.5, in_group, True),
              f"all {' '.join(group)} 2x slower": lambda r: slower(r, 2.0, in_group, True)}
    moves = [c["latency"]["median_ms"] / r["latency"]["median_ms"]
             for rec, cur in pairs for c, r in zip(cur["entries"], rec["entries"], strict=True)]
    return {"pairs": len(pairs),
            "pairs_failing": {name: sum(not gate.compare(plant(cur), rec).ok for rec, cur in pairs)
                              for name, plant in plants.items()},
            "single_entry_median_moves_between_unchanged_runs": [round(min(moves), 2), round(max(moves), 2)]}


if __name__ == "__main__":
    main()
