"""ONNX model -> runtime artifact: calibration, the INT8 plan (int8_policy), and the accuracy guard.

An INT8 build scores itself against FP32 on held-out labelled photos (never the calibration
photos) and keeps more of the model in float (int8_policy.guard_steps) until it keeps 99% of the FP32 top-1 (MLPerf's
rule for a quantized classifier), or `max_accuracy_drop` points when given. What it tried and
what stayed in float go in the manifest's `accuracy_bound`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from wae_deploy.convert.int8_policy import guard_steps, int8_plan
from wae_deploy.convert.targets import Target, get_target
from wae_deploy.core import atomic
from wae_deploy.core.errors import UserError
from wae_deploy.core.hashing import sha256
from wae_deploy.runtime import machine, onnx_meta
from wae_deploy.runtime.artifact import Artifact
from wae_deploy.runtime.data import ImageSet, default_data_root, load_split
from wae_deploy.runtime.metrics import evaluate_runner

CALIB_SEED, HELD_OUT_SEED = 0, 1
GUARD_FRACTION = 0.99    # INT8 keeps at least 99% of the FP32 top-1 by default
# The guard's sample: a 1% bound is ~0.9 points on Imagenette, and the drop measured on 2,000 photos
# has a standard error of ~0.3 (on 1,000, ~0.55: one recipe read 1.1 there and 0.82 on all 9,169);
# 5,000 brings it to ~0.2. Fewer than MIN_HELD_OUT cannot tell a 1% drop from chance.
EVAL_SIZE = 5000
MIN_HELD_OUT = 100


def default_artifact(onnx_path: Path, target: str, precision: str) -> Path:
    return Path(onnx_path).with_name(f"{Path(onnx_path).stem}.{target}-{precision}")


def calibration_set(spec, calib_dir: str | Path | None, size: int) -> tuple[ImageSet, dict]:
    """A deterministic sample of real training images (the 224-pixel default: imagenet-val1300)."""
    if size < 1:
        raise UserError(f"--calib-size must be positive, got {size}")
    root = Path(calib_dir) if calib_dir else default_data_root(spec)
    data = load_split(root, "train", spec).sample(size, seed=CALIB_SEED)
    return data, {"root": str(root), "split": "train", "size": len(data), "seed": CALIB_SEED}


def held_out_set(spec, eval_dir: str | Path | None, size: int, calib_dir: str | Path | None = None,
                 calib_size: int = 0) -> tuple[ImageSet, str]:
    """Labelled photos the guard scores on, and where they came from: `eval_dir`'s test split, or else
    the calibration source's training photos that the calibration sample did not draw."""
    if eval_dir:
        return load_split(Path(eval_dir), "test", spec).sample(size, seed=HELD_OUT_SEED), f"{eval_dir} (test)"
    root = Path(calib_dir) if calib_dir else default_data_root(spec)
    data = load_split(root, "train", spec).sample(size, seed=CALIB_SEED, skip=calib_size)
    return data, f"{root} (train, disjoint from the calibration sample)"


def build(onnx_path: str | Path, target_name: str | Target, precision: str, out: str | Path | None = None,
          calib_dir=None, calib_size: int = 300, max_accuracy_drop: float | None = None, eval_dir=None,
          eval_size: int = EVAL_SIZE, keep_float: tuple[str, ...] = (), cpu: str | None = None,
          accuracy_guard: bool = True, fp32_scores: dict | None = None, log=print) -> Artifact:
    """Build `precision` for `target_name`; INT8 for the CPU class `cpu` (default: this host's).

    `fp32_scores`: a dict kept by the caller across builds of one model for several runtimes (a
    bench), so that the FP32 reference is scored on the held-out photos once.
    """
    if max_accuracy_drop is not None and not max_accuracy_drop >= 0:  # also refuses NaN
        raise UserError(f"--max-accuracy-drop must be zero or more top-1 points, got {max_accuracy_drop}")
    if max_accuracy_drop is not None and not accuracy_guard:
        raise UserError("--max-accuracy-drop sets the accuracy guard's bound; --no-accuracy-guard turns it off")
    cpu_class = _cpu_class(cpu)
    target = _ready_target(target_name, precision)
    onnx_path = Path(onnx_path)
    info = onnx_meta.read(onnx_path)  # refuses corrupt files and models without our metadata
    out = Path(out) if out else default_artifact(onnx_path, target.name, precision)
    atomic.check_writable(out, "dir")  # before calibration: a bad -o fails at once
    t0 = time.perf_counter()
    on_cpu = getattr(target, "cpu", False)
    meta = {"cpu": {"class": cpu_class, "measured_on": machine.host_cpu_class()}} if on_cpu else {}
    calib, options = None, {}
    if precision == "int8":
        calib, meta["calibration"] = calibration_set(info.preprocessing, calib_dir, calib_size)
        keep_float, fix, meta["quantization"] = int8_plan(cpu_class, info.config.get("decomposition"), keep_float,
                                                          on_cpu, log)
        options = {"overflow_fix": True} if fix else {}

    unguarded = _unguarded(precision, info, max_accuracy_drop, accuracy_guard)
    if not unguarded:
        held_out, source = held_out_set(info.preprocessing, eval_dir, eval_size, calib_dir, calib_size)
        if len(held_out) < MIN_HELD_OUT:
            unguarded = (f"no held-out photos: {len(held_out)} left in {source} (at least {MIN_HELD_OUT} needed; "
                         "pass --eval DIR)")
    if unguarded:
        art = target.build(onnx_path, precision, calib, out, keep_float=keep_float, meta=meta, **options)
        if precision != "int8":
            return art
        log(f"  INT8 build unguarded: {unguarded}; its top-1 was not checked against FP32")
        return art.updated(accuracy_bound={"guarded": False, "why": unguarded})
    bound = ({"rule": "points", "max_drop": max_accuracy_drop} if max_accuracy_drop is not None
             else {"rule": "fraction of FP32", "fraction": GUARD_FRACTION})
    steps = guard_steps(keep_float, precision, info.config.get("decomposition"))
    scores = {} if fp32_scores is None else fp32_scores
    key = (sha256(onnx_path), source, calib_size, len(held_out))  # which photos were drawn
    if key not in scores:
        scores[key] = _fp32_top1(onnx_path, held_out, info.preprocessing, out)
    art, evidence = _search(target, onnx_path, precision, calib, out, held_out, info.preprocessing, bound,
                            scores[key], steps, meta, options, log)
    return art.updated(accuracy_bound={"guarded": True, **bound, **evidence, "held_out_source": source,
                                       "seconds": round(time.perf_counter() - t0, 1)})


def _cpu_class(name: str | None) -> str | None:
    """The class named by `--cpu`, or this host's; an unknown name is refused with the known ones."""
    if name is None:
        return machine.host_cpu_class()
    if name not in machine.CPU_CLASSES:
        raise UserError(f"unknown CPU class {name!r}; known: {', '.join(machine.CPU_CLASSES)}")
    return name


def _ready_target(target_name: str | Target, precision: str) -> Target:
    target = target_name if isinstance(target_name, Target) else get_target(target_name)
    if precision not in target.precisions:
        raise UserError(f"target {target.name} cannot build {precision}; it builds {', '.join(target.precisions)}")
    ok, why = target.available()
    if not ok:
        raise UserError(f"target {target.name} is not available here: {why}")
    return target


def _unguarded(precision: str, info, max_accuracy_drop, accuracy_guard: bool) -> str | None:
    """Why this build is not scored against FP32, or None when it is."""
    if precision == "fp32" or (precision != "int8" and max_accuracy_drop is None):
        return "not quantized"
    if not accuracy_guard:
        return "--no-accuracy-guard"
    if info.extra.get("untrained"):
        return "untrained weights have no accuracy to keep"
    return None


def _fp32_top1(onnx_path: Path, held_out: ImageSet, spec, out: Path) -> float:
    reference = get_target("ort")
    ref_dir = out.with_name(f".{out.name}.fp32-reference")
    try:
        reference.build(onnx_path, "fp32", None, ref_dir)
        with reference.load(ref_dir) as runner:
            return evaluate_runner(runner, held_out, spec)["top1"]
    finally:
        shutil.rmtree(ref_dir, ignore_errors=True)


def _search(target: Target, onnx_path: Path, precision: str, calib, out: Path, held_out: ImageSet, spec,
            bound: dict, ref_top1: float, steps: list[tuple[str, ...]], meta: dict, options: dict,
            log) -> tuple[Artifact, dict]:
    """Build each step until one keeps the top-1 within the bound, then NNCF's per-layer search;
    -> (the artifact, the evidence). Nothing is left behind when no step meets the bound."""
    max_drop = bound["max_drop"] if "max_drop" in bound else round(ref_top1 * (1 - bound["fraction"]), 3)
    tried = []

    def score(kept) -> float:
        with target.load(out) as runner:
            top1 = evaluate_runner(runner, held_out, spec)["top1"]
        drop = ref_top1 - top1
        tried.append({"keep_float": kept, "top1": top1, "drop": round(drop, 3)})
        return drop

    for kept in steps:
        art = target.build(onnx_path, precision, calib, out, keep_float=kept, meta=meta, **options)
        drop = score(list(kept))
        log(f"  {precision} keeping {', '.join(kept) or 'nothing'} in float: top-1 {tried[-1]['top1']:.2f}% "
            f"(FP32 {ref_top1:.2f}%, drop {drop:+.2f} points, bound {max_drop:.2f})")
        if drop <= max_drop:
            break
    else:
        if target.accuracy_control and precision == "int8":
            log("  per-layer search (NNCF accuracy control) ...")
            art = target.build(onnx_path, precision, calib, out, keep_float=steps[0], meta=meta,
                               accuracy_control=(held_out, max_drop), **options)
            drop = score("nncf-accuracy-control")
            # what NNCF returned, not what was asked: the layers its search left in float
            tried[-1]["float_layers"] = (art.manifest.get("accuracy_control") or {}).get("float_layers")
            log(f"  accuracy control: top-1 {tried[-1]['top1']:.2f}% (drop {drop:+.2f} points)")
        if drop > max_drop:
            shutil.rmtree(out, ignore_errors=True)
            raise UserError(f"{precision} on {target.name} cannot keep the top-1 drop within {max_drop:g} "
                            f"points (best {min(t['drop'] for t in tried):.2f}); no artifact written", exit_code=1)
    # The bound's evidence belongs with the artifact.
    return art, {"max_drop": max_drop, "fp32_top1": ref_top1, "held_out": len(held_out), "steps": tried}
