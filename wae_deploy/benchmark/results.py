"""The benchmark results file: one versioned JSON schema, written atomically, read with clear errors.

    results = new_results(environment=fingerprint(threads), suite={"name": "cifar10"}, peaks={...})
    results["entries"].append(make_entry(model="wae-resnet20", target="ort", precision="int8", batch=8,
                                         latency=stats, accuracy={"top1": 84.1, "top5": 99.2, "n": 10000}, ...))
    fill_speedups(results)
    save(results, "benchmarks/cpu-cifar10.json");   load("benchmarks/cpu-cifar10.json")

Schema version 3 (the full field list with units is in SCHEMA.md next to this file):

    {"format": "wae-deploy-bench", "schema_version": 3,
     "created": "2025-01-31T12:00:00Z",           # UTC, ISO 8601
     "command": "wae-deploy bench ..." | null,
     "environment": {...},                        # environment.fingerprint()
     "suite": {"name": str, ...},                 # free-form description of what was run
     "peaks": {"ort": {"matmul_n": int, "gflops": {"fp32": float, "int8": float}}, ...},
     "tegrastats": {...} | null,                  # environment.summarize_tegrastats() on a Jetson
     "power": {...} | null,                       # benchmark.energy.Monitor.summary(): meter and idle power
     "cells": [{"target", "precision", "batch", "clocks", "temperature_c", "power"?, "throttled", ...}],
     "comparisons": [{"a", "b", "target", "precision", "batch", "ratio", "ci95", "by_order"}],
     "entries": [{"model", "arch", "baseline", "target", "precision", "batch", "artifact",
                  "artifact_bytes", "accuracy": {"top1", "top5", "n"} | null,
                  "latency": {"median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "std_ms",
                              "cv", "iters", "total_s", "throughput_ips", "preprocess_ms_per_image",
                              "position_median_ms", "samples_ms"?},
                  "gmacs", "gflops_per_s", "efficiency_of_peak", "energy": {...} | null, "throttled",
                  "speedup_vs_baseline", "speedup_vs_fp32_baseline",
                  "profile"?: {"target", "precision", "batch", "runs", "chunks", "wall_ms", "kernel_ms",
                               "nodes", "parts", "precisions", "layers": [{"name", "op", "kernel",
                               "precision", "part", "ms", "share"}]}}],
     "loadgen"?: [{"model", "target", "precision", "scenario", "batch", "logs", "settings",
                   "performance": {"validity", "reason", "p90_ms", "early_stopping_p90_ms", "samples_per_s", ...},
                   "accuracy", "harness_accuracy", "accuracy_matches_harness", "audits"}]}   # bench --scenario

Readers ignore fields they do not know, so adding an optional field keeps the version; renaming,
removing or changing the meaning of a field raises SCHEMA_VERSION. Version 2: `peaks` holds one
peak per compute precision, and `efficiency_of_peak` compares with the entry's own precision
(version 1 compared every precision with the FP32 peak). Version 3: entries may carry the
runtime's per-layer `profile` (`bench --profile`); version 2 files are still read. The optional
top-level `loadgen` list (`bench --scenario`) is such an added field: it keeps version 3.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path

import numpy as np

from wae_deploy.core.atomic import write_text
from wae_deploy.core.errors import UserError
from wae_deploy.runtime.latency import LatencyStats, order_effect, ratio_ci

FORMAT = "wae-deploy-bench"
SCHEMA_VERSION = 3
# Version 3 only adds entries[].profile: a version 2 file reads as one without profiles.
READABLE_VERSIONS = (2, 3)
REQUIRED_ENTRY = ("model", "target", "precision", "batch", "latency")


def new_results(environment: dict, suite: dict, entries: list | None = None, peaks: dict | None = None,
                command: str | None = None, **extra) -> dict:
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": command, "environment": environment, "suite": suite, "peaks": peaks or {},
            "tegrastats": None, "comparisons": [], "entries": list(entries or []), **extra}


def make_entry(*, model: str, target: str, precision: str, batch: int, latency: LatencyStats | dict,
               arch: str | None = None, baseline: str | None = None, artifact: str | os.PathLike | None = None,
               accuracy: dict | None = None, gmacs: float | None = None, peak_gflops: float | None = None,
               preprocess_ms_per_image: float | None = None, include_samples: bool = False, **extra) -> dict:
    """One measured (model, target, precision, batch). `gmacs` is per image; `baseline` names the
    model this one is compared against (None for a baseline itself)."""
    lat = latency.as_dict(include_samples) if isinstance(latency, LatencyStats) else dict(latency)
    lat["preprocess_ms_per_image"] = preprocess_ms_per_image
    median_s = lat["median_ms"] / 1e3
    lat["throughput_ips"] = batch / median_s if median_s > 0 else None  # the entry's batch is the one that counts
    # a multiply-add is two floating-point operations; the batch shares one call's time
    gflops = 2.0 * gmacs * batch / median_s if gmacs and median_s > 0 else None
    size = artifact_bytes(artifact) if artifact else None
    return {"model": model, "arch": arch or model, "baseline": baseline, "target": target, "precision": precision,
            "batch": batch, "artifact": str(artifact) if artifact else None, "artifact_bytes": size,
            "accuracy": accuracy, "latency": lat, "gmacs": gmacs, "gflops_per_s": gflops,
            "efficiency_of_peak": gflops / peak_gflops if gflops and peak_gflops else None,
            "speedup_vs_baseline": None, "speedup_vs_fp32_baseline": None, **extra}


def make_comparison(a: str, b: str, stats_a: LatencyStats, stats_b: LatencyStats, *, target: str, precision: str,
                    batch: int) -> dict:
    """A `comparisons` item: the paired ratio a/b of two runners timed in the same interleaved run."""
    ci = ratio_ci(stats_a.samples_ms, stats_b.samples_ms)
    return {"a": a, "b": b, "target": target, "precision": precision, "batch": batch, "ratio": ci.ratio,
            "ci95": [ci.low, ci.high], "rounds": ci.n, "by_order": order_effect(stats_a, stats_b)}


def artifact_bytes(artifact: str | os.PathLike) -> int | None:
    """Size on disk: an OpenVINO .xml counts with its .bin weights, a folder with all its files."""
    p = Path(artifact)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    if not p.is_file():
        return None
    weights = p.with_suffix(".bin")
    return p.stat().st_size + (weights.stat().st_size if p.suffix == ".xml" and weights.is_file() else 0)


def find_entry(results: dict, model: str, target: str, precision: str, batch: int) -> dict | None:
    for e in results["entries"]:
        if (e["model"], e["target"], e["precision"], e["batch"]) == (model, target, precision, batch):
            return e
    return None


def fill_speedups(results: dict) -> dict:
    """Speed-ups as ratios of medians, where not already set (paired interleaved ratios win).

    speedup_vs_baseline: the baseline model at the same target, precision and batch.
    speedup_vs_fp32_baseline: the baseline model (a baseline itself: the same model) in FP32
    at the same target and batch.
    """
    for e in results["entries"]:
        ref = e.get("baseline")
        med = e["latency"]["median_ms"]
        if ref and e.get("speedup_vs_baseline") is None:
            b = find_entry(results, ref, e["target"], e["precision"], e["batch"])
            e["speedup_vs_baseline"] = b["latency"]["median_ms"] / med if b else None
        if e.get("speedup_vs_fp32_baseline") is None:
            b = find_entry(results, ref or e["model"], e["target"], "fp32", e["batch"])
            e["speedup_vs_fp32_baseline"] = b["latency"]["median_ms"] / med if b else None
    return results


def _clean(x):
    """JSON-ready: numpy scalars and arrays to Python, paths to str, NaN and infinities to null."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, os.PathLike):
        return str(x)
    return x


def problems(results) -> list[str]:
    """What makes `results` unreadable as this schema version ([] when fine)."""
    if not isinstance(results, dict):
        return [f"expected a JSON object, found {type(results).__name__}"]
    if results.get("format") != FORMAT:
        return [f"not a wae-deploy bench results file (format {results.get('format')!r}, expected {FORMAT!r})"]
    v = results.get("schema_version")
    if v not in READABLE_VERSIONS:
        who = "a newer" if isinstance(v, int) and v > SCHEMA_VERSION else "another"
        return [(f"results schema version {v!r} (written by {who} wae-deploy); this one reads version "
                 f"{SCHEMA_VERSION}: re-run the benchmark to record it again")]
    out = []
    if not isinstance(results.get("entries"), list):
        return ["'entries' is missing or not a list"]
    if not isinstance(results.get("environment"), dict):
        out.append("'environment' is missing or not an object")
    for i, e in enumerate(results["entries"]):
        if not isinstance(e, dict):
            out.append(f"entries[{i}] is not an object")
            continue
        missing = [k for k in REQUIRED_ENTRY if k not in e]
        if missing:
            out.append(f"entries[{i}] lacks {', '.join(missing)}")
        elif not isinstance(e["latency"], dict) or not isinstance(e["latency"].get("median_ms"), (int, float)):
            out.append(f"entries[{i}] lacks a numeric latency.median_ms")
        acc = e.get("accuracy")
        if acc is not None and not (isinstance(acc, dict) and all(isinstance(acc.get(k), (int, float))
                                                                  for k in ("top1", "n"))):
            out.append(f"entries[{i}].accuracy needs numeric top1 and n, or null")
    return out


def save(results: dict, path: str | os.PathLike) -> Path:
    """Write atomically (a reader never sees half a file). Invalid results are a bug: ValueError."""
    results = _clean(results)
    bad = problems(results)
    if bad:
        raise ValueError("refusing to write invalid results: " + "; ".join(bad))
    write_text(path, json.dumps(results, indent=1, allow_nan=False) + "\n")
    return Path(path)


def load(path: str | os.PathLike) -> dict:
    """Read a results file; any problem is a one-line UserError (exit status 2)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"results file not found: {p}")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read results file {p}: {getattr(e, 'strerror', None) or e}") from e
    try:
        results = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{p} is corrupt: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
    except (ValueError, RecursionError) as e:  # a 5000-digit number, nesting deeper than Python's stack
        raise UserError(f"{p} is corrupt: not readable JSON ({type(e).__name__})") from e
    bad = problems(results)
    if bad:
        raise UserError(f"{p}: {bad[0]}" + (f" (and {len(bad) - 1} more problems)" if len(bad) > 1 else ""))
    return results
