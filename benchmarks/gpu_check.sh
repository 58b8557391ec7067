#!/usr/bin/env bash
# The TensorRT check for a machine with an NVIDIA GPU, in under 5 minutes: what is installed (or why
# not), the GPU tests (skipped elsewhere), and one `bench --target trt` on a CIFAR-10 pair.
# Usage: benchmarks/gpu_check.sh [python]   (default: .venv/bin/python). Exit status: the first failure.
set -u
PY=${1:-.venv/bin/python}
OUT=${GPU_CHECK_OUT:-reports/gpu-check}
mkdir -p "$OUT"
status=0

echo "# nvidia-smi"
if command -v nvidia-smi >/dev/null; then nvidia-smi || status=1; else echo "missing: nvidia-smi (no NVIDIA driver)"; status=1; fi

echo "# versions"
"$PY" - <<'PY' || status=1
import importlib
ok = True
for name in ("tensorrt", "pycuda.driver", "nncf"):
    try:
        mod = importlib.import_module(name)
        version = getattr(mod, "__version__", None) or getattr(importlib.import_module(name.split(".")[0]), "VERSION_TEXT", "?")
        print(f"{name}: {version}")
    except Exception as e:  # report every missing part, not only the first
        print(f"{name}: missing ({type(e).__name__}: {e})")
        ok = False
raise SystemExit(0 if ok else 1)
PY

echo "# GPU tests"
timeout 150 "$PY" -m pytest -q -rs tests/test_tensorrt.py || status=1   # the GPU tests skip, with the reason, without one

echo "# bench --target trt (CIFAR-10 pair)"
timeout 120 "$PY" -m wae_deploy.cli bench --target trt --models models/wae-resnet20.pt,models/resnet20.pt \
  --batch 1,8,100 --eval-size 500 --min-time 1 --workdir build/gpu-check --out "$OUT/results.json" \
  --markdown "$OUT/bench.md" || status=1

echo "gpu-check: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
