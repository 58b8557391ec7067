"""A benchmark run: export and build what is missing, then measure accuracy and interleaved latency.

    results = run(BenchConfig(targets=["ort"], models=["models/wae-resnet20.pt", "models/resnet20.pt"]))

Every model is paired with its full-resolution baseline when both are in the run; the pair
(and every other model on the same target, precision and batch) is timed in one interleaved
loop, so the speed-up is a ratio measured under the same machine state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wae_deploy.benchmark import environment, sources
from wae_deploy.benchmark import results as R
from wae_deploy.benchmark.peak import RUNTIMES as PEAK_RUNTIMES
from wae_deploy.benchmark.peak import measure_peaks, peak_for
from wae_deploy.convert.targets import target_class
from wae_deploy.core.errors import UserError
from wae_deploy.runtime import artifact
from wae_deploy.runtime.latency import measure_interleaved
from wae_deploy.runtime.layer_profile import cannot_profile, profile
from wae_deploy.runtime.metrics import evaluate_runner

# The paper's table, beside which the paper-scale suite's speed-ups are shown.
PAPER_SPEEDUP = {"cpu": 3.13, "gpu": 2.59, "theoretical": 3.76}


@dataclass
class BenchConfig:
    targets: list[str]
    models: list[str]                       # checkpoints (.pt), ONNX models (.onnx), artifact folders
    precisions: list[str] | None = None     # None: every precision each target builds
    batches: list[int] = field(default_factory=lambda: [1, 8])
    data: str | None = None                 # evaluation images [default: a checkpoint's test split; else synthetic]
    eval_size: int | None = None            # None: the whole split
    calib_size: int = 300
    accuracy: bool = True
    workdir: Path = Path("build/bench")
    threads: int | None = None
    min_time_s: float = 3.0
    max_time_s: float = 30.0
    min_iters: int = 20
    pause_s: float = 0.0
    suite: str = "custom"
    profile_runs: int = 0                   # > 0: each entry also gets the runtime's per-layer profile


def _can_profile(target: str, log) -> bool:
    why = cannot_profile(target)
    if why:
        log(f"{why}; carrying on without its profile")
    return why is None


def _preprocess_ms(spec, images: np.ndarray) -> float:
    t0 = time.perf_counter()
    for _ in range(5):
        spec.normalize(images)
    return (time.perf_counter() - t0) / 5 / len(images) * 1e3


def _cpu_mismatch(path: Path, host_class: str | None) -> str | None:
    """The warning for an INT8 artifact scored on another CPU class (artifact.cpu_mismatch); None for an ONNX."""
    return artifact.cpu_mismatch(artifact.open(path), host_class) if artifact.is_artifact(path) else None


def run(cfg: BenchConfig, log: Callable[[str], None] = print, progress: Callable | None = None) -> dict:
    for b in cfg.batches:
        if b < 1:
            raise UserError(f"batch sizes must be positive, got {b}")
    # TensorRT engines get one optimisation profile per timed batch, tuned (opt) for it.
    targets = [target_class(t).for_batches(cfg.batches) for t in cfg.targets]
    for t in targets:
        ok, why = t.available()
        if not ok:
            raise UserError(f"target {t.name} is not available here: {why}")
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    models = sources.resolve(cfg.models, targets, cfg.workdir, cfg.data, log)
    eval_sets = sources.eval_sets(models, cfg.data, cfg.accuracy, cfg.eval_size)
    synthetic = [m.name for m in models if eval_sets[m.name] is None]
    if synthetic:
        log(f"timing on synthetic input (no accuracy): {', '.join(synthetic)}")
    threads = cfg.threads or os.cpu_count()
    env = environment.fingerprint(threads)
    precisions = {t.name: [p for p in t.precisions if any(p in m.precisions(t, cfg.precisions or t.precisions)
                                                           for m in models)] for t in targets}
    for t in targets:
        if not precisions[t.name]:
            log(f"nothing to time on {t.name}: none of the models builds or runs there at the precisions asked")
    peaks = {t.name: measure_peaks(t.name, precisions[t.name], threads) for t in targets
             if t.name in PEAK_RUNTIMES and precisions[t.name]}
    scored = [len(s) for s in eval_sets.values() if s is not None]
    out = R.new_results(env, {"name": cfg.suite, "models": [m.name for m in models], "batches": cfg.batches,
                              "eval_images": scored[0] if scored else 0, "threads": threads}, peaks=peaks,
                        cpu_mismatch=[])
    profiling = {t.name: cfg.profile_runs > 0 and _can_profile(t.name, log) for t in targets}
    with environment.Tegrastats() as tegra:
        for t in targets:
            for precision in precisions[t.name]:
                artifacts = {m.name: p for m in models
                             if (p := m.runs_on(t, precision, cfg.workdir, cfg.calib_size, log)) is not None}
                group = {m.name: m for m in models if m.name in artifacts}
                baseline = sources.baselines(group)
                runners = {}
                try:
                    for name, path in artifacts.items():
                        runners[name] = group[name].load(path, t, threads)
                        warning = _cpu_mismatch(path, env["cpu"].get("class"))
                        if warning:
                            log(warning)
                            out["cpu_mismatch"].append({"model": name, "target": t.name, "precision": precision,
                                                        "warning": warning})
                    accuracy = {name: evaluate_runner(r, eval_sets[name], group[name].preprocessing)
                                for name, r in runners.items() if eval_sets[name] is not None}
                    for batch in cfg.batches:
                        feeds, prep = {}, {}
                        for name, m in group.items():
                            images, feeds[name] = sources.feed(m, eval_sets[name], batch)
                            prep[name] = None if images is None else _preprocess_ms(m.preprocessing, images)
                        log(f"timing {t.name} {precision} batch {batch}: {', '.join(runners)}")
                        stats = measure_interleaved(
                            {n: (lambda r=r, x=feeds[n]: r.infer(x)) for n, r in runners.items()},
                            batch=batch, min_time_s=cfg.min_time_s, max_time_s=cfg.max_time_s,
                            min_iters=cfg.min_iters, pause_s=cfg.pause_s, progress=progress)
                        for name, m in group.items():
                            out["entries"].append(R.make_entry(
                                model=name, arch=m.arch, baseline=baseline[name], target=t.name,
                                precision=precision, batch=batch, latency=stats[name], artifact=artifacts[name],
                                accuracy=accuracy.get(name), gmacs=m.macs / 1e9 if m.macs else None,
                                peak_gflops=peak_for(peaks, t.name, precision),
                                preprocess_ms_per_image=prep[name], source=m.kind,
                                input="synthetic" if eval_sets[name] is None else "images"))
                            if profiling[t.name]:  # after the timed loop, so it cannot disturb it
                                out["entries"][-1]["profile"] = profile(
                                    artifacts[name], batch, cfg.profile_runs, threads, images=feeds[name]).to_dict()
                            if baseline[name]:
                                cmp = R.make_comparison(baseline[name], name, stats[baseline[name]], stats[name],
                                                        target=t.name, precision=precision, batch=batch)
                                out["comparisons"].append(cmp)
                                out["entries"][-1]["speedup_vs_baseline"] = cmp["ratio"]
                finally:
                    for r in runners.values():
                        r.close()
        out["tegrastats"] = tegra.summary()
    return R.fill_speedups(out)
