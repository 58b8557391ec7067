"""Classify images with a built artifact or an exported ONNX model, its own preprocessing applied.

    with load("build/wae.ort-int8") as model:          # or "wae.onnx"
        for p in model.predict(["cat.jpg", pil_image, uint8_array], top_k=3):
            print(p.source, p.top)                      # [("cat", 0.91), ("dog", 0.05), ...]

Torch-free: this is what runs on a device.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wae_deploy.core.errors import UserError
from wae_deploy.runtime import artifact, machine, onnx_meta
from wae_deploy.runtime.backends import get_backend
from wae_deploy.runtime.backends.base import Runner
from wae_deploy.runtime.data import IMAGE_SUFFIXES
from wae_deploy.runtime.preprocess import Preprocessing

ONNX_TARGETS = ("ort", "openvino")  # the runtimes that read an ONNX file as it is


@dataclass(frozen=True)
class Prediction:
    source: str                      # the file, or "image N" for in-memory images
    top: list[tuple[str, float]]     # (class name, probability), most likely first
    index: int                       # the top class's index

    def to_dict(self) -> dict:
        return {"file": self.source, "index": self.index,
                "top": [{"class": c, "probability": round(p, 6)} for c, p in self.top]}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class Model:
    """A loaded artifact or ONNX model: `predict` takes images, `infer` takes preprocessed batches."""

    def __init__(self, path: Path, target: str, precision: str, classes: list[str], spec: Preprocessing,
                 runner: Runner):
        self.path, self.target, self.precision = path, target, precision
        self.classes, self.preprocessing, self._runner = classes, spec, runner

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._runner.close()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W float32, already preprocessed -> N x classes logits."""
        return self._runner.infer(np.ascontiguousarray(batch, dtype=np.float32))

    def prepare(self, image) -> np.ndarray:
        """A path, PIL image or H x W x 3 uint8 RGB array -> the crop x crop x 3 uint8 the model reads."""
        if isinstance(image, (str, Path)):
            return self.preprocessing.load_image(image)
        return self.preprocessing.prepare(image)

    def classify(self, images: np.ndarray, sources: list[str], top_k: int = 5) -> list[Prediction]:
        """Prepared N x crop x crop x 3 uint8 images -> one Prediction each."""
        probs = softmax(self.infer(self.preprocessing.normalize(images)).astype(np.float64))
        k = max(1, min(top_k, probs.shape[1]))
        out = []
        for source, row in zip(sources, probs):
            order = np.argsort(-row, kind="stable")[:k]
            out.append(Prediction(source, [(self._name(i), float(row[i])) for i in order], int(order[0])))
        return out

    def predict(self, images: Iterable, top_k: int = 5, batch: int = 8) -> list[Prediction]:
        """Paths, PIL images or uint8 arrays (one, or a list) -> one Prediction each, in order."""
        single = isinstance(images, (str, Path, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim == 3)
        if single:  # an N x H x W x 3 array is N images, like a list
            images = [images]
        items = list(images)
        sources = [str(x) if isinstance(x, (str, Path)) else f"image {i}" for i, x in enumerate(items)]
        out = []
        for i in range(0, len(items), batch):
            prepared = np.stack([self.prepare(x) for x in items[i:i + batch]])
            out += self.classify(prepared, sources[i:i + batch], top_k)
        return out

    def _name(self, index: int) -> str:
        return self.classes[index] if index < len(self.classes) else str(index)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def load(path: str | Path | artifact.Artifact, target: str = "auto", threads: int | None = None,
         warn=_stderr) -> Model:
    """Open an artifact (folder) on the runtime it was built for, or an exported .onnx file on ONNX Runtime.

    An INT8 artifact scored on another CPU class than this host's gets one `warn` line (artifact.cpu_mismatch).
    """
    path = path.path if isinstance(path, artifact.Artifact) else Path(path)
    if path.is_dir():
        art = artifact.open(path)
        name = art.target if target == "auto" else get_backend(target).name
        if name != art.target:
            raise UserError(f"{path} was built for target {art.target!r}, not {name!r}")
        runner = get_backend(name).load(path, threads)
        mismatch = artifact.cpu_mismatch(art, machine.host_cpu_class())
        if mismatch:
            warn(mismatch)
        return Model(path, name, art.precision, art.classes, art.preprocessing, runner)
    if path.suffix != ".onnx":
        raise UserError(f"not an artifact folder or an .onnx model: {path}")
    name = "ort" if target == "auto" else get_backend(target).name
    if name not in ONNX_TARGETS:
        raise UserError(f"an ONNX model runs as it is on {' or '.join(ONNX_TARGETS)}; "
                        f"build an artifact for {name} with `wae-deploy build`")
    ok, why = get_backend(name).available()
    if not ok:
        raise UserError(why)
    if name == "ort":
        runner = _ort_runner(path, threads)
        # From the session, not onnx.load: importing onnx alone takes longer than classifying an image.
        info = onnx_meta.from_props(runner.session.get_modelmeta().custom_metadata_map, str(path))
    else:
        from wae_deploy.runtime.backends.openvino import OpenVINORunner

        info = onnx_meta.read(path)
        runner = OpenVINORunner(path, "fp32", threads)
    return Model(path, name, "fp32", info.classes, info.preprocessing, runner)


def _ort_runner(path: Path, threads: int | None) -> Runner:
    from wae_deploy.runtime.backends.onnxruntime import OnnxRuntimeRunner

    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    try:
        return OnnxRuntimeRunner(path, threads)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        raise UserError(f"not a readable ONNX model (corrupt or truncated): {path}") from e


def image_files(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Each file as given; each folder's images (recursively, sorted). An empty folder is an error."""
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"no images in {item} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
            yield from found
        elif item.exists():
            yield item
        else:
            raise UserError(f"image not found: {item}")


def predict_files(model: Model, files: list[Path], top_k: int = 5, batch: int = 8) -> Iterator[Prediction | UserError]:
    """One result per file, in order: its Prediction, or the UserError that says why it could not be read.

    A bad file costs only itself: the rest of its batch is still classified.
    """
    for i in range(0, len(files), batch):
        results: list[Prediction | UserError | None] = []
        prepared, sources = [], []
        for f in files[i:i + batch]:
            try:
                prepared.append(model.prepare(f))
                sources.append(str(f))
                results.append(None)
            except UserError as e:
                results.append(e)
        predictions = iter(model.classify(np.stack(prepared), sources, top_k) if prepared else [])
        yield from (r if r is not None else next(predictions) for r in results)
