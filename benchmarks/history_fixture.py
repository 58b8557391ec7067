"""Rebuild tests/data/history/ from results files this repository recorded: a bench history of real runs.

    python benchmarks/history_fixture.py            # from the checkout's git history

Each run is a version of a recorded results file as committed (no number is made up): the CPU
CI baseline benchmarks/ci-cpu.json as re-recorded at five commits on the 2-core AMD EPYC, and
`make demo`'s Imagenette results from the Xeon (AMX) and twice from the AMD EPYC (AVX2), so the
trend page has several commits and two hosts. The commit given to each run is the commit that
recorded the file (the bench ran on that commit's tree just before it was committed). The first
ci-cpu.json, results schema 1, is copied as it is: `wae-deploy report` must skip it with one line.
`make report-check` and tests/test_history.py read the folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "history"
RUNS = [("benchmarks/ci-cpu.json", c) for c in ("129f040", "0431105", "196b0c7", "c35426a", "a42d7d2")] + [
    ("benchmarks/cpu-imagenette-demo.json", "c00625f"),
    ("benchmarks/cpu-imagenette-demo-avx2.json", "e52f97f"),
    ("benchmarks/cpu-imagenette-demo-avx2.json", "1b2e055"),
]
OLD_SCHEMA = ("benchmarks/ci-cpu.json", "2d84c3b")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from wae_deploy.benchmark.history import append

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for path, short in RUNS:
        commit = git("rev-parse", short).strip()
        print(append(json.loads(git("show", f"{commit}:{path}")), OUT, commit=commit).name)
    path, short = OLD_SCHEMA
    (OUT / f"ci-cpu-{short}-schema1.json").write_text(git("show", f"{short}:{path}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
