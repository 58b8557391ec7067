"""ONNX model -> artifact: the build step, the INT8 policy and each target's builder.

The build (build), which parts of a model are quantized and how on each target and CPU class
(int8_policy), NNCF's calls that do it (quantize), Q/DQ graph edits (qdq), and per target a
builder that writes an artifact its runtime backend loads (targets/). Needs no torch: a device
builds its own artifacts. Exporting a checkpoint to ONNX needs torch and lives in training.export.

May import: core, runtime, NNCF, OpenVINO, TensorRT (inside functions). Never torch, training,
benchmark or the CLI.
"""
