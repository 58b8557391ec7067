"""The mutation score of a `make mutation` run, from mutmut's own records under mutants/.

    python benchmarks/mutation_score.py 'wae_deploy.runtime.metrics.*' ... > benchmarks/mutation.json

Only the mutants named by the patterns count (the functions that carry the numbers); mutmut's
verdicts are kept as they are: killed, survived, timeout (counted as killed: the mutant made a
test hang), no tests (no selected test runs that function), not checked (the run stopped first).
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

VERDICT = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout", -24: "timeout",
           24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def main(patterns: list[str]) -> dict:
    modules: dict[str, Counter] = {}
    survivors = []
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for key, code in sorted(codes.items()):
            if not any(fnmatch.fnmatch(key, p) for p in patterns):
                continue
            verdict = VERDICT.get(code, "suspicious")
            module = key.split(".x")[0]
            modules.setdefault(module, Counter())[verdict] += 1
            if verdict != "killed":
                survivors.append({"mutant": key, "verdict": verdict})
    total = Counter()
    for c in modules.values():
        total.update(c)

    def score(c: Counter) -> float | None:
        decided = c["killed"] + c["timeout"] + c["survived"]
        return round(100 * (c["killed"] + c["timeout"]) / decided, 1) if decided else None

    return {"tool": "mutmut", "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": "make mutation", "patterns": patterns,
            "score_percent": score(total), "counts": dict(total),
            "modules": {m: {"score_percent": score(c), **c} for m, c in sorted(modules.items())},
            "not_killed": survivors}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
