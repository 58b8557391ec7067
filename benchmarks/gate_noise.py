"""Does the CI gate raise false alarms? Record a baseline, then run the same bench 5 times unchanged.

    .venv/bin/python benchmarks/gate_noise.py      -> benchmarks/gate-noise.json, benchmarks/ci-cpu.json
The recorded baseline is also the one the CPU CI job compares against (benchmarks/ci-cpu.json).
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("wae-deploy"))
BENCH = [CLI, "bench", "--target", "ort", "--target", "openvino", "--precision", "fp32,int8",
         "--eval-size", "2000", "--min-time", "2", "--workdir", "build/gate-noise"]
RECORDED = "benchmarks/ci-cpu.json"  # relative: it is recorded in the results' command line


def main(runs: int = 5) -> None:
    subprocess.run(BENCH + ["--compare", RECORDED, "--update"], check=True, cwd=ROOT, capture_output=True)
    outcomes = []
    for i in range(runs):
        p = subprocess.run(BENCH + ["--compare", RECORDED], cwd=ROOT, capture_output=True, text=True)
        failed = [line for line in (p.stdout + p.stderr).splitlines() if line.startswith("FAIL")]
        outcomes.append({"run": i + 1, "exit": p.returncode, "failed_checks": failed})
        print(outcomes[-1], flush=True)
    (ROOT / "benchmarks/gate-noise.json").write_text(json.dumps({
        "what": f"{runs} unchanged runs of `{' '.join(['wae-deploy'] + BENCH[1:])} --compare benchmarks/ci-cpu.json` "
                "with the default (noise-derived) tolerances",
        "command": "python benchmarks/gate_noise.py",
        "false_alarms": sum(o["exit"] != 0 for o in outcomes), "runs": outcomes}, indent=2) + "\n")


if __name__ == "__main__":
    main()
