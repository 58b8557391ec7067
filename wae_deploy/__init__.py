"""wae-deploy: train, export, build and benchmark WAE-accelerated image classifiers.

    import wae_deploy as wd
    onnx = wd.export("models/wae-resnet20.pt", "wae.onnx")    # -> training.export.ExportResult (needs torch)
    art = wd.build(onnx.path, "ort", "int8")                  # -> runtime.artifact.Artifact
    results = wd.bench(["ort"], ["wae.onnx"])                 # -> the results dict (benchmark/SCHEMA.md)
    with wd.load(art) as model:                               # -> runtime.predict.Model (or a folder, a .onnx)
        model.predict(["cat.jpg"])                            # -> [runtime.predict.Prediction]

The packages, and what each may import (`make lint` checks it):
    core/      errors, atomic writes, hashes, extras, the reference-model registry; imports nothing of ours
    runtime/   the device side: artifacts, preprocessing, predict, doctor, each runtime's runner; no torch
    convert/   ONNX -> artifact: build, the INT8 policy, each target's builder; no torch
    training/  torch: networks, training, checkpoints, foreign weights, export to ONNX
    benchmark/ suites, timing, results, reports, the CI gate
    cli/       the command line, one module per command; nothing imports it

Each function imports its step when called, so `import wae_deploy` stays light and torch-free.
"""

from wae_deploy.core import __version__, moved

moved.install()  # the module names of the flat package before 0.1's layout, for a while (core/moved.py)


def _quiet(*_args, **_kw) -> None:
    pass


def export(checkpoint, out=None, **options):
    """A checkpoint -> a simplified ONNX model verified against PyTorch (options: training.export.export's)."""
    from wae_deploy.training.export import export as run

    return run(checkpoint, out, **{"log": _quiet, **options})


def build(model, target: str, precision: str, out=None, **options):
    """An exported ONNX model -> an artifact folder for `target` (options: convert.build.build's)."""
    from wae_deploy.convert.build import build as run

    return run(model, target, precision, out, **{"log": _quiet, **options})


def bench(targets, models, log=_quiet, **options) -> dict:
    """Accuracy and interleaved latency of `models` on `targets` (options: benchmark.suite.BenchConfig's)."""
    from pathlib import Path

    from wae_deploy.benchmark.suite import BenchConfig, run

    if "workdir" in options:
        options["workdir"] = Path(options["workdir"])
    return run(BenchConfig(targets=list(targets), models=[str(m) for m in models], **options), log=log)


def load(path, target: str = "auto", threads: int | None = None, **options):
    """An Artifact, an artifact folder or an exported .onnx model, ready to predict (see runtime.predict.Model)."""
    from wae_deploy.runtime.predict import load as run

    return run(path, target, threads, **options)


__all__ = ["__version__", "bench", "build", "export", "load"]
