"""The torch side: networks, training, checkpoints, foreign weights, and export to ONNX.

Networks (models/), the train loop (train) and its distributed and streaming parts
(distributed, sync_bn, stream), checkpoints (checkpoint), foreign weights (weights, keymaps,
caffe), inspection (inspection), model cards (modelcard, reference_table), checkpoint -> ONNX
(export), and PyTorch as a reference target (torch_target).

May import: core, runtime, torch. Never benchmark or the CLI. A device never loads it.
"""
