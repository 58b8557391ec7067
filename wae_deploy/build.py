"""ONNX model -> runtime artifact, with calibration and the accuracy-bounded INT8 fallback."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from . import Step, atomic, onnx_meta
from .artifact import Artifact
from .data import ImageSet, default_data_root, load_split
from .errors import UserError
from .metrics import evaluate_runner
from .targets import Target, get_target

sys.modules[__name__].__class__ = Step  # `wd.build(...)`: see wae_deploy.Step
CALIB_SEED, HELD_OUT_SEED = 0, 1


def default_artifact(onnx_path: Path, target: str, precision: str) -> Path:
    return Path(onnx_path).with_name(f"{Path(onnx_path).stem}.{target}-{precision}")


def calibration_set(spec, calib_dir: str | Path | None, size: int) -> tuple[ImageSet, dict]:
    """A deterministic sample of real training images (the 224-pixel default: imagenet-val1300)."""
    if size < 1:
        raise UserError(f"--calib-size must be positive, got {size}")
    root = Path(calib_dir) if calib_dir else default_data_root(spec)
    data = load_split(root, "train", spec).sample(size, seed=CALIB_SEED)
    return data, {"root": str(root), "split": "train", "size": len(data), "seed": CALIB_SEED}


def held_out_set(spec, eval_dir: str | Path | None, size: int) -> ImageSet:
    root = Path(eval_dir) if eval_dir else default_data_root(spec)
    return load_split(root, "test", spec).sample(size, seed=HELD_OUT_SEED)


def build(onnx_path: str | Path, target_name: str | Target, precision: str, out: str | Path | None = None,
          calib_dir=None, calib_size: int = 300, max_accuracy_drop: float | None = None, eval_dir=None,
          eval_size: int = 2000, keep_float: tuple[str, ...] = (), log=print) -> Artifact:
    if max_accuracy_drop is not None and not max_accuracy_drop >= 0:  # also refuses NaN
        raise UserError(f"--max-accuracy-drop must be zero or more top-1 points, got {max_accuracy_drop}")
    target = target_name if isinstance(target_name, Target) else get_target(target_name)
    if precision not in target.precisions:
        raise UserError(f"target {target.name} cannot build {precision}; it builds {', '.join(target.precisions)}")
    ok, why = target.available()
    if not ok:
        raise UserError(f"target {target.name} is not available here: {why}")
    onnx_path = Path(onnx_path)
    info = onnx_meta.read(onnx_path)  # refuses corrupt files and models without our metadata
    out = Path(out) if out else default_artifact(onnx_path, target.name, precision)
    atomic.check_writable(out, "dir")  # before calibration: a bad -o fails at once
    t0 = time.perf_counter()
    meta = {}
    calib = None
    if precision == "int8":
        calib, meta["calibration"] = calibration_set(info.preprocessing, calib_dir, calib_size)
        if info.config.get("decomposition") == "dwt" and "encoder" not in keep_float:
            # Rounded to INT8, the fixed 9/7 filters no longer sum to zero: the diagonal band passes
            # 0.13 of the image's local mean, which its normalisation then magnifies (Imagenette:
            # -5.2 top-1, -0.7 to -0.9 with the wavelet in float; benchmarks/dwt-int8.json). It is
            # one small grouped convolution, so float costs next to nothing.
            keep_float = ("encoder", *keep_float)
            log("  INT8 keeps the 9/7 wavelet in float (its rounded filters leak the image mean into the high bands)")
    if max_accuracy_drop is None or precision == "fp32":
        return target.build(onnx_path, precision, calib, out, keep_float=keep_float, meta=meta)

    # Accuracy-bounded build: measure, and keep more in float until the drop fits the bound.
    held_out = held_out_set(info.preprocessing, eval_dir, eval_size)
    reference = get_target("ort")
    ref_dir = out.with_name(f".{out.name}.fp32-reference")
    try:
        reference.build(onnx_path, "fp32", None, ref_dir)
        with reference.load(ref_dir) as runner:
            ref_top1 = evaluate_runner(runner, held_out, info.preprocessing)["top1"]
    finally:
        shutil.rmtree(ref_dir, ignore_errors=True)
    decomposed = info.config.get("decomposition") in ("wae", "dwt")
    steps = [()]
    if precision == "int8" and decomposed:
        steps += [("encoder", "high"), ("encoder", "high", "fusion")]
    tried = []
    for step in steps:
        kept = tuple(dict.fromkeys((*keep_float, *step)))
        art = target.build(onnx_path, precision, calib, out, keep_float=kept, meta=meta)
        with target.load(out) as runner:
            top1 = evaluate_runner(runner, held_out, info.preprocessing)["top1"]
        drop = ref_top1 - top1
        tried.append({"keep_float": list(kept), "top1": top1, "drop": round(drop, 3)})
        log(f"  {precision} keeping {', '.join(kept) or 'nothing'} in float: top-1 {top1:.2f}% "
            f"(FP32 {ref_top1:.2f}%, drop {drop:+.2f} points)")
        if drop <= max_accuracy_drop:
            break
    else:
        if target.accuracy_control and precision == "int8":
            log("  per-layer search (NNCF accuracy control) ...")
            art = target.build(onnx_path, precision, calib, out, keep_float=tuple(keep_float), meta=meta,
                               accuracy_control=(held_out, max_accuracy_drop))
            with target.load(out) as runner:
                top1 = evaluate_runner(runner, held_out, info.preprocessing)["top1"]
            drop = ref_top1 - top1
            # what NNCF returned, not what was asked: the layers its search left in float
            control = art.manifest.get("accuracy_control") or {}
            tried.append({"keep_float": "nncf-accuracy-control", "top1": top1, "drop": round(drop, 3),
                          "float_layers": control.get("float_layers")})
            log(f"  accuracy control: top-1 {top1:.2f}% (drop {drop:+.2f} points)")
        if drop > max_accuracy_drop:
            shutil.rmtree(out, ignore_errors=True)
            raise UserError(f"{precision} on {target.name} cannot keep the top-1 drop within {max_accuracy_drop} "
                            f"points (best {min(t['drop'] for t in tried):.2f}); no artifact written", exit_code=1)
    # The bound's evidence belongs with the artifact.
    return art.updated(accuracy_bound={"max_drop": max_accuracy_drop, "fp32_top1": ref_top1,
                                       "held_out": len(held_out), "steps": tried,
                                       "seconds": round(time.perf_counter() - t0, 1)})
