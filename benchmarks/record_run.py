"""Run `make test` or `make demo` and append its wall time, outcome and host to benchmarks/runs.json.

    python3 benchmarks/record_run.py test        # or: demo
    python3 benchmarks/record_run.py test --note "third run in a row"

The record names the CPU class (machine.cpu_class), the CPU model and the commit, so the suite's
and the demo's times on each host class can be compared. It needs nothing but the standard
library and the checkout (the make target installs what it runs). The run's output goes to the
terminal as usual; the last line it printed that looks like a test summary or the demo's
headline is kept.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "benchmarks" / "runs.json"
SUMMARY = re.compile(r"\d+ (passed|failed|errors?)\b|^error:|headline|speed-up", re.I)  # not make's own "Error 2"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("target", choices=["test", "demo"])
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from wae_deploy.runtime import machine  # machine.py imports nothing beyond the standard library

    info = machine.parse_cpuinfo(machine.read(machine.LIVE, "proc/cpuinfo"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    t0 = time.perf_counter()
    proc = subprocess.Popen(["make", args.target], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    summary = ""
    for line in proc.stdout:
        sys.stdout.write(line)
        if SUMMARY.search(line):
            summary = line.strip()
    code = proc.wait()
    record = {"command": f"make {args.target}", "exit_code": code, "seconds": round(time.perf_counter() - t0, 1),
              "summary": summary, "cpu_class": machine.cpu_class(info["flags"]), "cpu_model": info["model"],
              "commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "note": args.note}
    runs = json.loads(RUNS.read_text()) if RUNS.exists() else []
    RUNS.write_text(json.dumps([*runs, record], indent=2) + "\n")
    print(f"recorded in {RUNS.relative_to(ROOT)}: {record['seconds']} s, exit {code}, {record['cpu_class']}")
    return code


if __name__ == "__main__":
    sys.exit(main())
