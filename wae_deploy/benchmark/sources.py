"""What `bench --models` names, made ready to time: checkpoints, exported ONNX models, built artifacts.

    models = resolve(cfg.models, targets, cfg.workdir, cfg.data, log)       # -> [BenchModel]
    path = models[0].runs_on(target, "fp32", cfg.workdir, cfg.calib_size, log)  # what to load there, or None
    runner = models[0].load(path, target, threads)

A checkpoint is exported into the workdir (torch is imported then, and only then); an ONNX model
is built for each --target in the workdir; an artifact runs as it is, on its own target and
precision. An ONNX file without wae-deploy metadata (from another exporter) is timed as it is on
ONNX Runtime or OpenVINO, on synthetic input. The architecture, its baseline and the multiply-adds
come from the ONNX metadata or the artifact manifest, so a device needs no torch; where a file
predates them, torch counts them if it is installed, and otherwise they stay unknown (None): no
speed-up pair is guessed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wae_deploy.convert.build import build, default_artifact
from wae_deploy.core import registry
from wae_deploy.core.errors import UserError
from wae_deploy.core.hashing import sha256
from wae_deploy.runtime import artifact, onnx_meta
from wae_deploy.runtime.data import ImageSet, default_data_root, load_split
from wae_deploy.runtime.preprocess import Preprocessing

AS_IS_TARGETS = ("ort", "openvino")  # the runtimes that read an ONNX file without building it
# The accuracy guard's FP32 score of each model on its held-out photos, shared by the INT8 builds of
# one model for several runtimes (build.build's fp32_scores).
_FP32_SCORES: dict = {}


@dataclass
class BenchModel:
    name: str                               # the file name without suffix; an artifact's folder name
    kind: str                               # "checkpoint", "onnx" or "artifact"
    path: Path                              # the ONNX model (exported or given) or the artifact folder
    arch: str | None
    baseline_arch: str | None               # None: no speed-up is reported for this model
    macs: int | None                        # per image; None: unknown
    preprocessing: Preprocessing | None     # None: an ONNX without wae-deploy metadata
    untrained: bool = False
    artifact: artifact.Artifact | None = None
    input_shape: tuple[int, ...] | None = None  # C x H x W of an ONNX without metadata

    def precisions(self, target, wanted: list[str]) -> list[str]:
        """What this model is timed at on `target`: `wanted` (--precision) where it is built, its own
        precision where it runs as it is (an artifact; an ONNX without metadata counts as FP32)."""
        if self.artifact is not None:
            return [self.artifact.precision] if self.artifact.target == target.name else []
        if self.preprocessing is None:
            return ["fp32"] if target.name in AS_IS_TARGETS else []
        return [p for p in wanted if p in target.precisions]

    def runs_on(self, target, precision: str, workdir: Path, calib_size: int, log) -> Path | None:
        """What to load on (target, precision): the artifact (built if need be), the ONNX as it is, or None."""
        if precision not in self.precisions(target, [precision]):
            return None
        if self.artifact is not None or self.preprocessing is None:
            return self.path
        return _built(self.path, target, precision, workdir, calib_size, log)

    def load(self, path: Path, target, threads: int | None):
        if self.preprocessing is not None or self.artifact is not None:
            return target.load(path, threads)
        if target.name == "ort":
            from wae_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner

            return OnnxRuntimeRunner(path, threads)
        from wae_deploy.runtime.backends.openvino import OpenVINORunner

        return OpenVINORunner(path, "fp32", threads)


def _built(onnx_path: Path, target, precision: str, workdir: Path, calib_size: int, log) -> Path:
    """The artifact for (model, target, precision) in workdir, rebuilt unless built from this very ONNX."""
    out = workdir / default_artifact(onnx_path, target.name, precision).name
    try:
        manifest = artifact.open(out).manifest
        if manifest["source_sha256"] == sha256(onnx_path) and target.same_build(manifest):
            target.load(out).close()  # refuses artifacts of another runtime version or device
            return out
    except UserError:
        pass
    log(f"building {onnx_path.stem} for {target.name} {precision} ...")
    build(onnx_path, target, precision, out, calib_size=calib_size, fp32_scores=_FP32_SCORES, log=log)
    return out


def suite_models(suite: str, models: list[str] | None, workdir: Path, log) -> tuple[list[str], bool]:
    """What a `bench --suite` run times, and whether it scores accuracy: the suite's reference checkpoints
    (found or downloaded by core.registry) unless --models names others. The paper suite's architecture
    names stand for untrained 224-pixel checkpoints (written into workdir: speed only), scored only
    when real checkpoints are among them (e.g. converted released weights)."""
    models = models or [str(registry.resolve(n, log)) if registry.get(n).file else n for n in registry.names(suite)]
    if suite != "paper":
        return models, True
    given = any(_is_path(m) for m in models)
    from wae_deploy.training import checkpoint  # torch: only the paper suite's untrained checkpoints need it

    return [m if _is_path(m) else str(checkpoint.untrained_file(m, workdir)) for m in models], given


def _is_path(model: str) -> bool:
    """A checkpoint, ONNX model or artifact folder, as opposed to an architecture name."""
    return model.endswith((".pt", ".onnx")) or Path(model).is_dir()


def resolve(models: list[str], targets: list, workdir: Path, data: str | None, log) -> list[BenchModel]:
    """Each of `models` as a BenchModel; bad input is a UserError, before anything is built or timed."""
    out = [_resolve(m, targets, workdir, data, log) for m in models]
    if len({m.name for m in out}) != len(out):
        raise UserError("two models share a file name; rename one")
    return out


def _resolve(model: str, targets: list, workdir: Path, data: str | None, log) -> BenchModel:
    path = Path(model)
    names = [t.name for t in targets]
    if path.is_dir():
        art = artifact.open(path)  # a folder without a manifest: "not a wae-deploy artifact"
        if art.target not in names:
            raise UserError(f"{path} was built for target {art.target!r}, which is not among --target "
                            f"{', '.join(names)}")
        targets[names.index(art.target)].load(path).close()  # another runtime version: refused now, not later
        return _described(BenchModel(path.name, "artifact", path, art.manifest.get("arch"), None, None,
                                     art.preprocessing, artifact=art), art.source_metadata or _source_of(art),
                           {"num_classes": len(art.classes)})
    if path.suffix == ".onnx":
        return _onnx(path, targets, data)
    if not path.is_file():
        raise UserError(f"model not found: {model}")
    return _exported(path, workdir, data, log)


def _onnx(path: Path, targets: list, data: str | None) -> BenchModel:
    model = onnx_meta.load_model(path, load_weights=False)  # missing or corrupt: one line
    if not any(p.key.startswith(onnx_meta.PREFIX) for p in model.metadata_props):  # another exporter's
        if data:
            raise UserError(f"{path} has no wae-deploy metadata, so its preprocessing is unknown and --data "
                            "cannot be scored on it; export it with `wae-deploy export`, or leave out --data "
                            "to time it on synthetic input")
        if not set(AS_IS_TARGETS) & {t.name for t in targets}:
            raise UserError(f"{path} has no wae-deploy metadata: it can only be timed as it is, on "
                            f"{' or '.join(AS_IS_TARGETS)}; export it with `wae-deploy export` to build it")
        return BenchModel(path.stem, "onnx", path, None, None, None, None, input_shape=_input_shape(model, path))
    info = onnx_meta.from_model(model, str(path))  # malformed metadata: one line
    return _described(BenchModel(path.stem, "onnx", path, info.arch, None, None, info.preprocessing),
                      info.extra, info.config)


def _input_shape(model, path: Path) -> tuple[int, ...]:
    """C x H x W of the model's first input (batch axis dropped), for synthetic input."""
    weights = {t.name for t in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in weights)
    t = first.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    if t.elem_type != 1 or len(dims) < 2 or None in dims[1:]:
        raise UserError(f"{path}: input {first.name!r} is not float32 with fixed sizes beyond the batch axis; "
                        "cannot make synthetic input for it")
    return tuple(dims[1:])


def _exported(ckpt: Path, workdir: Path, data: str | None, log) -> BenchModel:
    """A checkpoint's ONNX in workdir (reused while the checkpoint is unchanged): the step that needs torch."""
    from wae_deploy.training.export import export

    ckpt_sha = sha256(ckpt)
    onnx_path = workdir / f"{ckpt.stem}.onnx"
    if not (onnx_path.is_file() and onnx_meta.read(onnx_path).checkpoint_sha256 == ckpt_sha):
        log(f"exporting {ckpt} ...")
        export(ckpt, onnx_path, data=data)
    local = onnx_path.with_suffix(".pt")  # the torch target's reference reads the checkpoint beside it
    if not local.exists() or sha256(local) != ckpt_sha:
        local.unlink(missing_ok=True)
        try:
            os.link(ckpt, local)
        except OSError:
            shutil.copyfile(ckpt, local)
    info = onnx_meta.read(onnx_path)
    return _described(BenchModel(ckpt.stem, "checkpoint", onnx_path, info.arch, None, None, info.preprocessing),
                      info.extra, info.config)


def _source_of(art: artifact.Artifact) -> dict:
    """An older artifact's metadata, from the ONNX it was built from if that is still beside it."""
    source = art.path.parent / str(art.manifest.get("source"))
    try:
        if source.is_file() and sha256(source) == art.manifest.get("source_sha256"):
            return onnx_meta.read(source).extra
    except UserError:
        pass
    return {}


def _described(m: BenchModel, extra: dict, config: dict | None = None) -> BenchModel:
    m.untrained = bool(extra.get("untrained"))
    m.macs, m.baseline_arch = extra.get("macs"), extra.get("baseline_arch")
    if (m.macs is None or m.baseline_arch is None) and m.arch:
        m.macs, m.baseline_arch = _counted_by_torch(m, config or {})
    return m


def _counted_by_torch(m: BenchModel, config: dict) -> tuple[int | None, str | None]:
    """Files exported before the count travelled in the metadata: count with torch where it is installed."""
    try:
        from wae_deploy.training.models import create_model
        from wae_deploy.training.models.flops import baseline_of, count
    except ImportError:  # the base install: the count stays unknown
        return m.macs, m.baseline_arch
    size = config.get("input_size") or m.preprocessing.crop
    try:
        macs = m.macs or count(create_model(m.arch, config.get("num_classes"), size), size).total_macs
        return macs, m.baseline_arch or baseline_of(m.arch)
    except UserError:  # an architecture this version does not know
        return m.macs, m.baseline_arch


def eval_sets(models: list[BenchModel], data: str | None, accuracy: bool,
              eval_size: int | None) -> dict[str, ImageSet | None]:
    """Each model's evaluation images: `data`, else a checkpoint's own test split; None: synthetic input."""
    loaded, out = {}, {}
    for m in models:
        root = data or (default_data_root(m.preprocessing) if m.kind == "checkpoint" else None)
        if not accuracy or m.untrained or m.preprocessing is None or root is None:
            out[m.name] = None
            continue
        key = (str(root), repr(m.preprocessing))  # every model in a suite normally shares one
        if key not in loaded:
            images = load_split(Path(root), "test", m.preprocessing)
            loaded[key] = images.sample(eval_size, seed=1) if eval_size else images
        out[m.name] = loaded[key]
    return out


def feed(m: BenchModel, data: ImageSet | None, batch: int) -> tuple[np.ndarray | None, np.ndarray]:
    """A batch to time, as uint8 images (None for an ONNX without metadata) and as the model's input:
    real images, else synthetic ones of the model's size."""
    rng = np.random.default_rng(0)
    if m.preprocessing is None:
        return None, rng.standard_normal((batch, *m.input_shape), dtype=np.float32)
    if data is not None:
        images = np.resize(data.images[:batch], (batch, *data.images.shape[1:]))
    else:
        images = rng.integers(0, 256, (batch, m.preprocessing.crop, m.preprocessing.crop, 3), dtype=np.uint8)
    return images, m.preprocessing.normalize(images)


def baselines(group: dict[str, BenchModel]) -> dict[str, str | None]:
    """Each model's baseline among those timed with it: another model of its recorded baseline architecture."""
    return {name: next((n for n, o in group.items() if n != name and m.baseline_arch and o.arch == m.baseline_arch),
                       None) for name, m in group.items()}
