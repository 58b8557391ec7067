"""The device side: everything a machine needs to run an artifact, and nothing that needs torch.

Artifacts and their manifests (artifact), ONNX metadata (onnx_meta), preprocessing, decoded
image sets (data, imagenette), machine facts (machine), scoring (metrics), predict, the layer
profiler (layer_profile), doctor, energy meters (power), clocks and thermal zones (clocks) and the
thread that reads them while timing (sampler), and each runtime's loader and runner (backends/).

May import: core, numpy, the runtimes (onnxruntime, openvino, tensorrt; inside functions).
Never torch, training, convert, benchmark or the CLI (`make lint` checks it: .importlinter).
"""
