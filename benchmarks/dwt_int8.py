"""Why the 9/7 wavelet baseline lost ~5 top-1 points in INT8, and what keeping the wavelet in float gives back.

    .venv/bin/python benchmarks/dwt_int8.py models/vgg16-imagenette-dwt.pt  -> benchmarks/dwt-int8.json

Builds go straight through the targets (not `wae-deploy build`, which now keeps the wavelet in
float by itself), the same 300 calibration photos for both, scored on all val photos. The filter
rows show the cause: per-channel symmetric INT8 rounds each 9x9 band filter on its own scale,
and the high-pass bands stop summing to zero, so they pass a share of the image's local mean.
"""

import json
import sys
import tempfile
from pathlib import Path

import torch

from wae_deploy.convert.build import calibration_set
from wae_deploy.convert.targets import get_target
from wae_deploy.runtime import onnx_meta
from wae_deploy.runtime.data import default_data_root, load_split
from wae_deploy.runtime.metrics import evaluate_runner
from wae_deploy.training.export import export
from wae_deploy.training.models.wae import DWT97

ROOT = Path(__file__).resolve().parent.parent
BUILDS = [("fp32", "fp32", ()), ("int8", "int8", ()), ("int8, wavelet in float", "int8", ("encoder",))]


def filters() -> list[dict]:
    """Each band's DC gain (sum of taps) before and after per-channel symmetric INT8 rounding."""
    rows = []
    for band, f in zip(("LL", "HL", "LH", "HH"), DWT97().weight[:4, 0]):
        step = f.abs().max() / 127
        q = torch.round(f / step) * step
        rows.append({"band": band, "dc_gain": round(float(f.sum()), 5), "dc_gain_int8": round(float(q.sum()), 5),
                     "taps_rounded_to_zero": int(((q == 0) & (f != 0)).sum())})
    return rows


def main(ckpt: str) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export(ckpt, Path(tmp) / "dwt.onnx", log=lambda *a: None).path
        spec = onnx_meta.read(onnx_path).preprocessing
        val = load_split(default_data_root(spec), "test", spec)
        calib, meta = calibration_set(spec, None, 300)
        for target_name in ("ort", "openvino"):
            target = get_target(target_name)
            for label, precision, keep in BUILDS:
                out = Path(tmp) / f"{target_name}-{precision}-{len(keep)}"
                target.build(onnx_path, precision, calib if precision == "int8" else None, out, keep_float=keep,
                             meta={"calibration": meta})
                with target.load(out) as runner:
                    top1 = evaluate_runner(runner, val, spec)["top1"]
                results.setdefault(target_name, {})[label] = round(top1, 2)
                print(target_name, label, f"{top1:.2f}", flush=True)
    record = {"what": __doc__.strip().splitlines()[0], "command": f"python benchmarks/dwt_int8.py {ckpt}",
              "checkpoint": ckpt, "val_images": len(val), "calibration": meta, "top1": results, "filters": filters()}
    (ROOT / "benchmarks" / "dwt-int8.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
