"""What a wae-deploy ONNX model says about itself: written at export, read by build and bench."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wae_deploy.core.errors import UserError
from wae_deploy.runtime.preprocess import Preprocessing

if TYPE_CHECKING:
    import onnx  # imported where a model is read: `import onnx` alone costs 0.7 s, opening an artifact needs none

PREFIX = "wae_deploy."
INPUT = "images"          # the exported model's input: N x 3 x H x W, dynamic N


@dataclass
class ModelInfo:
    arch: str
    classes: list[str]
    preprocessing: Preprocessing
    config: dict
    checkpoint_sha256: str
    version: str
    extra: dict  # metrics, untrained; macs (per image) and baseline_arch, counted at export

    def to_props(self) -> dict[str, str]:
        props = {"arch": self.arch, "classes": json.dumps(self.classes),
                 "preprocessing": json.dumps(self.preprocessing.to_dict(), sort_keys=True),
                 "config": json.dumps(self.config, sort_keys=True), "checkpoint_sha256": self.checkpoint_sha256,
                 "version": self.version, **{k: json.dumps(v, sort_keys=True) for k, v in self.extra.items()}}
        return {PREFIX + k: v for k, v in props.items()}


def write(model: onnx.ModelProto, info: ModelInfo) -> None:
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in sorted(info.to_props().items()):
        model.metadata_props.add(key=k, value=v)


def from_model(model: onnx.ModelProto, where: str = "model") -> ModelInfo:
    # protobuf hands back bytes for a string that is not UTF-8: such a key is not one of ours
    return from_props({p.key: p.value for p in model.metadata_props if isinstance(p.key, str)}, where)


def from_props(metadata: dict[str, str], where: str = "model") -> ModelInfo:
    """The ModelInfo in an ONNX model's metadata_props (as a runtime session reports them, too)."""
    props = {k[len(PREFIX):]: v for k, v in metadata.items() if k.startswith(PREFIX)}
    if "arch" not in props or "preprocessing" not in props:
        raise UserError(f"{where} is not a wae-deploy export (no wae_deploy metadata); run `wae-deploy export` first")
    if not all(isinstance(v, str) for v in props.values()):
        raise UserError(f"{where} has malformed wae_deploy metadata: a value is not UTF-8 text")
    try:
        base = {"arch", "classes", "preprocessing", "config", "checkpoint_sha256", "version"}
        info = ModelInfo(arch=props["arch"], classes=json.loads(props.get("classes", "[]")),
                         preprocessing=Preprocessing.from_dict(json.loads(props["preprocessing"])),
                         config=json.loads(props.get("config", "{}")),
                         checkpoint_sha256=props.get("checkpoint_sha256", ""), version=props.get("version", ""),
                         extra={k: json.loads(v) for k, v in props.items() if k not in base})
    except (ValueError, TypeError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise UserError(f"{where} has malformed wae_deploy metadata: {type(e).__name__}: {str(e)[:200]}") from e
    if not isinstance(info.classes, list) or not isinstance(info.config, dict):
        raise UserError(f"{where} has malformed wae_deploy metadata: classes must be a list and config an object")
    return info


def load_model(path: str | Path, load_weights: bool = True) -> onnx.ModelProto:
    """onnx.load with one clean error for missing, corrupt or truncated files."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
    except Exception as e:  # noqa: BLE001 - protobuf raises several unrelated types on bad bytes
        raise UserError(f"not a readable ONNX model (corrupt or truncated): {path}") from e
    if not model.graph.node:
        raise UserError(f"not a readable ONNX model (empty graph): {path}")
    return model


def read(path: str | Path) -> ModelInfo:
    return from_model(load_model(path, load_weights=False), str(path))
