"""Where does INT8 pay on a WAE? WAE-VGG16 (224x224, untrained) with parts kept in float, per runtime.

    .venv/bin/python benchmarks/int8_policy.py     -> benchmarks/int8-policy.json
FP32 and every INT8 variant of one runtime are timed interleaved in one loop; ratios are FP32 / variant.
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from wae_deploy.benchmark.environment import fingerprint
from wae_deploy.convert.build import build
from wae_deploy.convert.targets import get_target
from wae_deploy.runtime.latency import measure_interleaved
from wae_deploy.training import checkpoint
from wae_deploy.training.export import export

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"fp32": ("fp32", ()), "int8": ("int8", ()), "int8 (encoder float)": ("int8", ("encoder",)),
            "int8 (encoder + high float)": ("int8", ("encoder", "high"))}


def main(arch: str = "wae-vgg16") -> None:
    work = Path(tempfile.mkdtemp(prefix="wae-int8-policy-"))
    ckpt, onnx_path = work / f"{arch}.pt", work / f"{arch}.onnx"
    checkpoint.save(checkpoint.untrained(arch), ckpt)
    export(ckpt, onnx_path, verify=0)
    out = {"what": f"{arch} FP32 against INT8 variants, interleaved, 2 threads", "command":
           "python benchmarks/int8_policy.py", "environment": fingerprint(), "results": {}}
    for target in ("ort", "openvino"):
        runners, executed = {}, {}
        for name, (precision, keep) in VARIANTS.items():
            artifact = work / f"{target}-{len(runners)}"
            manifest = build(onnx_path, target, precision, artifact, keep_float=keep, log=lambda s: None).manifest
            executed[name] = manifest["executed"]
            runners[name] = get_target(target).load(artifact)
        for batch in (1, 8):
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
            stats = measure_interleaved({n: (lambda r=r, x=x: r.infer(x)) for n, r in runners.items()},
                                        batch=batch, min_time_s=10, min_iters=10)
            row = {n: {"median_ms": round(s.median_ms, 2), "speedup_vs_fp32": round(stats["fp32"].median_ms /
                       s.median_ms, 2), "cv": round(s.cv, 3)} for n, s in stats.items()}
            out["results"][f"{target} batch {batch}"] = row
            print(target, batch, {n: r["speedup_vs_fp32"] for n, r in row.items()}, flush=True)
        out["results"][f"{target} executed"] = executed
        for r in runners.values():
            r.close()
    (ROOT / "benchmarks/int8-policy.json").write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
