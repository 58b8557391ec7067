"""The optional installs: which extra brings which package, and the one command that installs it.

Every "X is not installed" message asks here, so a hint never names an extra that does not
bring the package (tests/test_extras.py checks this table against pyproject.toml).
"""

from __future__ import annotations

# import name -> (distribution, the extra that brings it; None: the base install)
PACKAGES = {
    "numpy": ("numpy", None), "PIL": ("pillow", None), "click": ("click", None), "rich": ("rich", None),
    "onnx": ("onnx", None), "onnxruntime": ("onnxruntime", None),
    "torch": ("torch", "train"), "onnxscript": ("onnxscript", "train"), "onnxslim": ("onnxslim", "train"),
    "safetensors": ("safetensors", "train"), "google": ("protobuf", "train"),
    "openvino": ("openvino", "openvino"), "nncf": ("nncf", "openvino"),
    "tensorrt": ("tensorrt", "trt"), "pycuda": ("pycuda", "trt"),
    "onnxsim": ("onnxsim", "onnxsim"), "matplotlib": ("matplotlib", "plot"),
    "mlperf_loadgen": ("mlcommons-loadgen", "mlperf"),
}


def known(module: str) -> bool:
    return module.partition(".")[0] in PACKAGES


def install_command(module: str) -> str:
    """'openvino' -> "pip install 'wae-deploy[openvino]'"; a package of the base install -> 'pip install wae-deploy'."""
    extra = PACKAGES[module.partition(".")[0]][1]
    return f"pip install 'wae-deploy[{extra}]'" if extra else "pip install wae-deploy"
