"""A run in github-action-benchmark's custom formats, so its GitHub Pages history needs no code of ours.

    bigger, smaller = write(run, "site/")   # site/benchmark-bigger-is-better.json, ...-smaller-is-better.json

The action takes one file per tool: `customBiggerIsBetter` (speed-up, top-1) and
`customSmallerIsBetter` (latencies, energy). Each is a JSON list of {"name", "unit", "value"},
plus the optional "extra" text it shows in a point's tooltip. Names are stable across runs
("wae-resnet20 ort int8 b1 p50"), so the action draws one chart per name over commits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from wae_deploy.benchmark.history import Run
from wae_deploy.benchmark.trend import METRICS, cell_label, cell_of
from wae_deploy.core.atomic import write_text

BIGGER = "benchmark-bigger-is-better.json"
SMALLER = "benchmark-smaller-is-better.json"


def benchmarks(run: Run, bigger_is_better: bool) -> list[dict]:
    extra = f"{run.host_label} ({run.host}); suite {run.suite or '?'}; commit {run.commit}"
    out = []
    for metric in (m for m in METRICS if m.bigger_is_better == bigger_is_better):
        for e in run.results["entries"]:
            v = metric.value(e)
            if isinstance(v, (int, float)):
                out.append({"name": f"{cell_label(cell_of(e))} {metric.name}", "unit": metric.unit,
                            "value": float(v), "extra": extra})
    return out


def write(run: Run, folder: str | os.PathLike) -> tuple[Path, Path]:
    folder = Path(folder)
    paths = folder / BIGGER, folder / SMALLER
    for path, bigger in zip(paths, (True, False)):
        write_text(path, json.dumps(benchmarks(run, bigger), indent=1) + "\n")
    return paths
