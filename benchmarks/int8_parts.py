"""Where INT8 pays and where it does not: each model part's kernel time in FP32 and INT8, from `bench --profile`.

    .venv/bin/python benchmarks/int8_parts.py RESULTS.json OUT.json

RESULTS.json is a `wae-deploy bench --profile --precision fp32,int8` results file. For every model,
target and batch profiled in both precisions, each part's milliseconds (the profile's kernel time
times the part's share) and the part's INT8 speed-up are written to OUT.json and printed as a
Markdown table. "if_all_parts_like_main" is the whole model's INT8 speed-up had every part gained
what the main branch gained: the gap to the measured one is what the small parts cost.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def part_ms(profile: dict) -> dict[str, float]:
    return {part: profile["kernel_ms"] * share for part, share in profile["parts"].items()}


def compare(results: dict) -> list[dict]:
    by_key = {(e["model"], e["target"], e["batch"], e["precision"]): e["profile"]
              for e in results["entries"] if e.get("profile")}
    rows = []
    for (model, target, batch, precision), fp32 in sorted(by_key.items()):
        int8 = by_key.get((model, target, batch, "int8"))
        if precision != "fp32" or int8 is None:
            continue
        a, b = part_ms(fp32), part_ms(int8)
        parts = {p: {"fp32_ms": round(a[p], 3), "int8_ms": round(b.get(p, 0.0), 3),
                     "int8_speedup": round(a[p] / b[p], 2) if b.get(p) else None,
                     "int8_share": round(b.get(p, 0.0) / int8["kernel_ms"], 3)} for p in a}
        row = {"model": model, "target": target, "batch": batch, "fp32_kernel_ms": round(fp32["kernel_ms"], 3),
               "int8_kernel_ms": round(int8["kernel_ms"], 3),
               "int8_speedup": round(fp32["kernel_ms"] / int8["kernel_ms"], 2), "parts": parts}
        lead = "main" if "main" in parts else "classifier"
        if parts.get(lead, {}).get("int8_speedup"):
            row["if_all_parts_like_" + lead] = parts[lead]["int8_speedup"]
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| model | target | batch | part | FP32 ms | INT8 ms | INT8 speed-up | share of INT8 time |",
           "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        for p, v in sorted(r["parts"].items(), key=lambda kv: -kv[1]["fp32_ms"]):
            out.append(f"| {r['model']} | {r['target']} | {r['batch']} | {p} | {v['fp32_ms']:.2f} | "
                       f"{v['int8_ms']:.2f} | {v['int8_speedup'] or 0:.2f}x | {v['int8_share']:.1%} |")
        out.append(f"| {r['model']} | {r['target']} | {r['batch']} | **all** | {r['fp32_kernel_ms']:.2f} | "
                   f"{r['int8_kernel_ms']:.2f} | **{r['int8_speedup']:.2f}x** | |")
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    results = json.loads(Path(sys.argv[1]).read_text())
    rows = compare(results)
    record = {"what": "per-part kernel time (ms per call) in FP32 and INT8, from the runtimes' own profilers",
              "command": f"python benchmarks/int8_parts.py {sys.argv[1]} {sys.argv[2]}",
              "source": {"results": sys.argv[1], "recorded": results.get("created") or results.get("recorded"),
                         "environment": results.get("environment", {}).get("cpu", {}).get("model")},
              "rows": rows}
    Path(sys.argv[2]).write_text(json.dumps(record, indent=1) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
