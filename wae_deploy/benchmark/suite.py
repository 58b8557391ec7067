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

from wae_deploy.benchmark import environment, results, sources
from wae_deploy.benchmark.energy import Monitor
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
    sysfs: Path = Path("/")                 # where power, clocks and temperatures are read (tests: a recorded tree)
    idle_s: float = 2.0                     # idle power is measured this long before timing (with a power meter)


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


def ready_targets(cfg: BenchConfig) -> list:
    """The run's targets, each set up for its batch sizes; refuses a non-positive batch or a missing runtime."""
    for b in cfg.batches:
        if b < 1:
            raise UserError(f"batch sizes must be positive, got {b}")
    # TensorRT engines get one optimisation profile per timed batch, tuned (opt) for it.
    targets = [target_class(t).for_batches(cfg.batches) for t in cfg.targets]
    for t in targets:
        ok, why = t.available()
        if not ok:
            raise UserError(f"target {t.name} is not available here: {why}")
    return targets


def _precisions(cfg: BenchConfig, targets: list, models: list[sources.BenchModel], log) -> dict[str, list[str]]:
    """{target: the precisions asked for that at least one model builds or runs there}, in the target's order."""
    precisions = {t.name: [p for p in t.precisions if any(p in m.precisions(t, cfg.precisions or t.precisions)
                                                           for m in models)] for t in targets}
    for t in targets:
        if not precisions[t.name]:
            log(f"nothing to time on {t.name}: none of the models builds or runs there at the precisions asked")
    return precisions


@dataclass
class _Run:
    """What every timed group of one run shares, and the results it fills."""

    cfg: BenchConfig
    models: list[sources.BenchModel]
    eval_sets: dict
    threads: int
    host_class: str | None
    peaks: dict
    profiling: dict[str, bool]
    monitor: Monitor
    out: dict
    log: Callable[[str], None]
    progress: Callable | None


@dataclass
class _Group:
    """The models timed in one interleaved loop (one target and precision): their artifacts, runners, accuracy."""

    target: str
    precision: str
    models: dict[str, sources.BenchModel]
    artifacts: dict[str, Path]
    baseline: dict[str, str | None]
    runners: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)


def run(cfg: BenchConfig, log: Callable[[str], None] = print, progress: Callable | None = None) -> dict:
    """Export and build what is missing, then score and time every model on every target, precision and batch."""
    targets = ready_targets(cfg)
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    models = sources.resolve(cfg.models, targets, cfg.workdir, cfg.data, log)
    eval_sets = sources.eval_sets(models, cfg.data, cfg.accuracy, cfg.eval_size)
    synthetic = [m.name for m in models if eval_sets[m.name] is None]
    if synthetic:
        log(f"timing on synthetic input (no accuracy): {', '.join(synthetic)}")
    threads = cfg.threads or os.cpu_count()
    env = environment.fingerprint(threads)
    monitor = Monitor.open(cfg.sysfs, log, idle_s=cfg.idle_s)   # idle power before the peaks heat the machine
    precisions = _precisions(cfg, targets, models, log)
    peak_s = min(1.0, cfg.min_time_s)
    peaks = {t.name: measure_peaks(t.name, precisions[t.name], threads, peak_s) for t in targets
             if t.name in PEAK_RUNTIMES and precisions[t.name]}
    scored = [len(s) for s in eval_sets.values() if s is not None]
    out = results.new_results(env, {"name": cfg.suite, "models": [m.name for m in models], "batches": cfg.batches,
                                    "eval_images": scored[0] if scored else 0, "threads": threads}, peaks=peaks,
                              cpu_mismatch=[], power=monitor.summary(), cells=[])
    profiling = {t.name: cfg.profile_runs > 0 and _can_profile(t.name, log) for t in targets}
    state = _Run(cfg, models, eval_sets, threads, env["cpu"].get("class"), peaks, profiling, monitor, out, log,
                 progress)
    with environment.Tegrastats() as tegra:
        for t in targets:
            for precision in precisions[t.name]:
                _time_group(state, t, precision)
        out["tegrastats"] = tegra.summary()
    return results.fill_speedups(out)


def _time_group(state: _Run, target, precision: str) -> None:
    """Every model that runs on `target` at `precision`: built or found, loaded, scored, then timed per batch."""
    cfg = state.cfg
    artifacts = {m.name: p for m in state.models
                 if (p := m.runs_on(target, precision, cfg.workdir, cfg.calib_size, state.log)) is not None}
    models = {m.name: m for m in state.models if m.name in artifacts}
    group = _Group(target.name, precision, models, artifacts, sources.baselines(models))
    try:
        for name, path in artifacts.items():
            group.runners[name] = models[name].load(path, target, state.threads)
            _note_cpu_mismatch(state, group, name, path)
        group.accuracy = {name: evaluate_runner(r, state.eval_sets[name], models[name].preprocessing)
                          for name, r in group.runners.items() if state.eval_sets[name] is not None}
        for batch in cfg.batches:
            _time_batch(state, group, batch)
    finally:
        for r in group.runners.values():
            r.close()


def _note_cpu_mismatch(state: _Run, group: _Group, name: str, path: Path) -> None:
    """Log and record the warning for an INT8 artifact built for another CPU class than this host's."""
    warning = _cpu_mismatch(path, state.host_class)
    if warning:
        state.log(warning)
        state.out["cpu_mismatch"].append({"model": name, "target": group.target, "precision": group.precision,
                                          "warning": warning})


def _time_batch(state: _Run, group: _Group, batch: int) -> None:
    """One interleaved timing loop of the group's runners at `batch`, then an entry per model."""
    feeds, prep = {}, {}
    for name, m in group.models.items():
        images, feeds[name] = sources.feed(m, state.eval_sets[name], batch)
        prep[name] = None if images is None else _preprocess_ms(m.preprocessing, images)
    state.log(f"timing {group.target} {group.precision} batch {batch}: {', '.join(group.runners)}")
    cfg = state.cfg
    with state.monitor.cell() as sampler:  # energy, clocks and temperatures of this cell
        stats = measure_interleaved(
            {n: (lambda r=r, x=feeds[n]: r.infer(x)) for n, r in group.runners.items()},
            batch=batch, min_time_s=cfg.min_time_s, max_time_s=cfg.max_time_s,
            min_iters=cfg.min_iters, pause_s=cfg.pause_s, progress=state.progress)
    cell, energy = state.monitor.account(sampler, stats, batch)
    if cell is not None:
        state.out["cells"].append({"target": group.target, "precision": group.precision, "batch": batch, **cell})
        for reason in cell["throttle_reasons"]:
            state.log(f"throttled: {group.target} {group.precision} batch {batch}: {reason}")
    for name in group.models:
        _record(state, group, batch, name, stats, feeds[name], prep[name],
                energy=energy.get(name), throttled=cell["throttled"] if cell else None)


def _record(state: _Run, group: _Group, batch: int, name: str, stats: dict, feed, prep_ms: float | None, *,
            energy: dict | None, throttled: bool | None) -> None:
    """A model's entry at one batch, with its profile when asked and its speed-up over its baseline.
    `energy` and `throttled`: the model's energy in the cell and the cell's verdict (None: not measured)."""
    m, baseline = group.models[name], group.baseline[name]
    entry = results.make_entry(
        model=name, arch=m.arch, baseline=baseline, target=group.target, precision=group.precision, batch=batch,
        latency=stats[name], artifact=group.artifacts[name], accuracy=group.accuracy.get(name),
        gmacs=m.macs / 1e9 if m.macs else None, peak_gflops=peak_for(state.peaks, group.target, group.precision),
        preprocess_ms_per_image=prep_ms, source=m.kind,
        input="synthetic" if state.eval_sets[name] is None else "images", energy=energy,
        throttled=throttled)
    state.out["entries"].append(entry)
    if state.profiling[group.target]:  # after the timed loop, so it cannot disturb it
        entry["profile"] = profile(group.artifacts[name], batch, state.cfg.profile_runs, state.threads,
                                   images=feed).to_dict()
    if baseline:
        cmp = results.make_comparison(baseline, name, stats[baseline], stats[name],
                                      target=group.target, precision=group.precision, batch=batch)
        state.out["comparisons"].append(cmp)
        entry["speedup_vs_baseline"] = cmp["ratio"]
