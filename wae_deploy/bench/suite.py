"""A benchmark run: export and build what is missing, then measure accuracy and interleaved latency.

    results = run(BenchConfig(targets=["ort"], models=["models/wae-resnet20.pt", "models/resnet20.pt"]))

Every model is paired with its full-resolution baseline when both are in the run; the pair
(and every other model on the same target, precision and batch) is timed in one interleaved
loop, so the speed-up is a ratio measured under the same machine state.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import artifact, checkpoint, onnx_meta
from ..build import build, default_artifact
from ..data import default_data_root, load_split
from ..errors import UserError
from ..export import export
from ..metrics import evaluate_runner
from ..models import create_model
from ..models.flops import baseline_of, count
from ..profile import cannot_profile, profile
from ..targets import get_target
from . import environment
from . import results as R
from .latency import measure_interleaved
from .peak import RUNTIMES as PEAK_RUNTIMES
from .peak import measure_peaks, peak_for

# The paper's table, beside which the paper-scale suite's speed-ups are shown.
PAPER_SPEEDUP = {"cpu": 3.13, "gpu": 2.59, "theoretical": 3.76}


@dataclass
class BenchConfig:
    targets: list[str]
    models: list[str]                       # checkpoints (.pt) or exported models (.onnx)
    precisions: list[str] | None = None     # None: every precision each target builds
    batches: list[int] = field(default_factory=lambda: [1, 8])
    data: str | None = None                 # evaluation images [default: the model's test split]
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


def _prepare(model: str, workdir: Path, data: str | None, log) -> Path:
    """An exported ONNX for `model` in workdir (reused while the checkpoint is unchanged)."""
    path = Path(model)
    if path.suffix == ".onnx":
        onnx_meta.read(path)
        return path
    if not path.is_file():
        raise UserError(f"model not found: {model}")
    ckpt_sha = checkpoint.sha256(path)
    onnx_path = workdir / f"{path.stem}.onnx"
    if not (onnx_path.is_file() and onnx_meta.read(onnx_path).checkpoint_sha256 == ckpt_sha):
        log(f"exporting {path} ...")
        export(path, onnx_path, data=data)
    local = onnx_path.with_suffix(".pt")  # the torch target's reference reads the checkpoint beside it
    if not local.exists() or checkpoint.sha256(local) != ckpt_sha:
        local.unlink(missing_ok=True)
        try:
            os.link(path, local)
        except OSError:
            shutil.copyfile(path, local)
    return onnx_path


def _artifact(onnx_path: Path, target, precision: str, cfg: BenchConfig, log) -> Path:
    """The artifact for (model, target, precision), rebuilt unless it was built from this very ONNX."""
    out = default_artifact(onnx_path, target.name, precision)
    try:
        if artifact.open(out).manifest["source_sha256"] == checkpoint.sha256(onnx_path):
            target.load(out).close()  # refuses artifacts of another runtime version or device
            return out
    except UserError:
        pass
    log(f"building {onnx_path.stem} for {target.name} {precision} ...")
    build(onnx_path, target.name, precision, out, calib_size=cfg.calib_size, log=log)
    return out


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


def run(cfg: BenchConfig, log: Callable[[str], None] = print, progress: Callable | None = None) -> dict:
    for b in cfg.batches:
        if b < 1:
            raise UserError(f"batch sizes must be positive, got {b}")
    targets = [get_target(t) for t in cfg.targets]
    for t in targets:
        ok, why = t.available()
        if not ok:
            raise UserError(f"target {t.name} is not available here: {why}")
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    onnx_paths = [_prepare(m, cfg.workdir, cfg.data, log) for m in cfg.models]
    infos = {p.stem: onnx_meta.read(p) for p in onnx_paths}
    if len(infos) != len(onnx_paths):
        raise UserError("two models share a file name; rename one")
    archs = {name: info.arch for name, info in infos.items()}
    baseline = {name: next((n for n, a in archs.items() if a == baseline_of(arch) and n != name), None)
                for name, arch in archs.items()}
    macs = {name: count(create_model(info.arch, info.config["num_classes"], info.config["input_size"]),
                        info.config["input_size"]).total_macs / 1e9 for name, info in infos.items()}

    # One evaluation set per preprocessing spec (every model in a suite normally shares one).
    eval_sets = {}
    for info in infos.values():
        key = repr(info.preprocessing)
        if key not in eval_sets:
            root = Path(cfg.data) if cfg.data else default_data_root(info.preprocessing)
            data = load_split(root, "test", info.preprocessing)
            eval_sets[key] = data.sample(cfg.eval_size, seed=1) if cfg.eval_size else data
    threads = cfg.threads or os.cpu_count()
    env = environment.fingerprint(threads)
    precisions = {t.name: [p for p in (cfg.precisions or t.precisions) if p in t.precisions] for t in targets}
    peaks = {t.name: measure_peaks(t.name, precisions[t.name], threads) for t in targets if t.name in PEAK_RUNTIMES}
    out = R.new_results(env, {"name": cfg.suite, "models": list(infos), "batches": cfg.batches,
                              "eval_images": len(next(iter(eval_sets.values()))) if cfg.accuracy else 0,
                              "threads": threads}, peaks=peaks)
    profiling = {t.name: cfg.profile_runs > 0 and _can_profile(t.name, log) for t in targets}
    with environment.Tegrastats() as tegra:
        for t in targets:
            for precision in precisions[t.name]:
                artifacts = {p.stem: _artifact(p, t, precision, cfg, log) for p in onnx_paths}
                runners = {name: t.load(a, threads) for name, a in artifacts.items()}
                try:
                    accuracy = {}
                    for name, runner in runners.items():
                        info = infos[name]
                        data = eval_sets[repr(info.preprocessing)]
                        if cfg.accuracy and not info.extra.get("untrained"):
                            accuracy[name] = evaluate_runner(runner, data, info.preprocessing)
                    for batch in cfg.batches:
                        feeds, prep = {}, {}
                        for name, info in infos.items():
                            images = np.resize(eval_sets[repr(info.preprocessing)].images[:batch],
                                               (batch, *eval_sets[repr(info.preprocessing)].images.shape[1:]))
                            feeds[name] = info.preprocessing.normalize(images)
                            prep[name] = _preprocess_ms(info.preprocessing, images)
                        log(f"timing {t.name} {precision} batch {batch}: {', '.join(runners)}")
                        stats = measure_interleaved(
                            {n: (lambda r=r, x=feeds[n]: r.infer(x)) for n, r in runners.items()},
                            batch=batch, min_time_s=cfg.min_time_s, max_time_s=cfg.max_time_s,
                            min_iters=cfg.min_iters, pause_s=cfg.pause_s, progress=progress)
                        for name in runners:
                            out["entries"].append(R.make_entry(
                                model=name, arch=archs[name], baseline=baseline[name], target=t.name,
                                precision=precision, batch=batch, latency=stats[name], artifact=artifacts[name],
                                accuracy=accuracy.get(name), gmacs=macs[name],
                                peak_gflops=peak_for(peaks, t.name, precision),
                                preprocess_ms_per_image=prep[name]))
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
