"""What a built engine runs in which precision, read back with TensorRT's engine inspector.

The engine is built with ProfilingVerbosity.DETAILED, so IEngineInspector.get_layer_information
gives each layer as JSON: "LayerType" and its "Inputs" with a "Format/Datatype" such as
"Row major linear FP16 format" (the keys Polygraphy's inspector reads, too).
"""

from __future__ import annotations

import json
from collections import Counter

# Substrings of "Format/Datatype", in the order they must be tried ("BFLOAT16" before "FLOAT").
_TYPES = (("BFLOAT16", "bf16"), ("FP16", "fp16"), ("HALF", "fp16"), ("INT8", "int8"), ("FP8", "fp8"),
          ("FP32", "fp32"), ("FLOAT", "fp32"), ("INT32", "int32"), ("INT64", "int64"), ("BOOL", "bool"))


def datatype(format_datatype: str) -> str | None:
    text = format_datatype.upper()
    return next((name for key, name in _TYPES if key in text), None)


def executed_precisions(trt, engine) -> dict:
    """{precision: {layer type: count}}, by the data type of each layer's first input.

    TensorRT 10+ reports layers once, not per profile, so the first num_layers / profiles are read.
    """
    inspector = engine.create_engine_inspector()
    counts: dict[str, Counter] = {}
    for index in range(engine.num_layers // max(1, engine.num_optimization_profiles)):
        info = inspector.get_layer_information(index, trt.LayerInformationFormat.JSON)
        layer = json.loads(info) if info else {}
        if not isinstance(layer, dict):     # not built DETAILED: names only
            continue
        inputs = layer.get("Inputs") or [{}]
        precision = datatype(str(inputs[0].get("Format/Datatype", ""))) or "unknown"
        counts.setdefault(precision, Counter())[layer.get("LayerType", "Unknown")] += 1
    return {p: dict(sorted(c.items())) for p, c in sorted(counts.items())}
