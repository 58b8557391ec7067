"""wae-deploy: train, export, build and benchmark WAE-accelerated image classifiers.

    import wae_deploy as wd
    onnx = wd.export("models/wae-resnet20.pt", "wae.onnx")    # -> export.ExportResult (needs torch)
    art = wd.build(onnx.path, "ort", "int8")                  # -> artifact.Artifact
    results = wd.bench(["ort"], ["wae.onnx"])                 # -> the results dict (bench/SCHEMA.md)
    with wd.load(art) as model:                               # -> predict.Model (or an artifact folder, a .onnx)
        model.predict(["cat.jpg"])                            # -> [predict.Prediction]

Each call imports its step when called, so `import wae_deploy` stays light and torch-free.
"""

import importlib
import types

__version__ = "0.1.0"

STEPS = ("export", "build", "bench")


class Step(types.ModuleType):
    """The class of the modules export, build and bench: calling one runs its step, `wd.build(...)`.

    In Python a package attribute and the submodule of the same name are one object (importing
    wae_deploy.build sets wae_deploy.build), so the API's steps are those modules, made callable.
    """

    def __call__(self, *args, **kwargs):
        return _STEP_CALLS[self.__name__.rpartition(".")[2]](*args, **kwargs)


def __getattr__(name: str):
    if name in STEPS:  # wd.build before anything imported wae_deploy.build
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _quiet(*_args, **_kw) -> None:
    pass


def _export(checkpoint, out=None, **options):
    """A checkpoint -> a simplified ONNX model verified against PyTorch (options: export.export's)."""
    from .export import export as run

    return run(checkpoint, out, **{"log": _quiet, **options})


def _build(model, target: str, precision: str, out=None, **options):
    """An exported ONNX model -> an artifact folder for `target` (options: build.build's)."""
    from .build import build as run

    return run(model, target, precision, out, **{"log": _quiet, **options})


def _bench(targets, models, log=_quiet, **options) -> dict:
    """Accuracy and interleaved latency of `models` on `targets` (options: bench.suite.BenchConfig's)."""
    from pathlib import Path

    from .bench.suite import BenchConfig, run

    if "workdir" in options:
        options["workdir"] = Path(options["workdir"])
    return run(BenchConfig(targets=list(targets), models=[str(m) for m in models], **options), log=log)


_STEP_CALLS = {"export": _export, "build": _build, "bench": _bench}


def load(path, target: str = "auto", threads: int | None = None):
    """An Artifact, an artifact folder or an exported .onnx model, ready to predict (see predict.Model)."""
    from .predict import load as run

    return run(path, target, threads)
