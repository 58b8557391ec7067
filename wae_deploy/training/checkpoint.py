"""The checkpoint schema: one file that says what the model is and how to feed it.

Loading goes through torch.load(weights_only=True) only: a checkpoint that carries pickled
code is refused, never executed.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from wae_deploy.core import __version__, atomic
from wae_deploy.core.errors import UserError
from wae_deploy.core.hashing import sha256  # noqa: F401 - a checkpoint's identity in the ONNX metadata
from wae_deploy.runtime.preprocess import Preprocessing
from wae_deploy.training.models import create_model, parse_arch

FORMAT = "wae-deploy-checkpoint"
SCHEMA_VERSION = 1
REQUIRED = ("format", "schema_version", "arch", "config", "state_dict", "classes", "preprocessing")


@dataclass
class Checkpoint:
    arch: str
    config: dict                     # num_classes, input_size, lambda_energy, gamma
    state_dict: dict
    classes: list[str]
    preprocessing: Preprocessing
    metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def build_model(self) -> torch.nn.Module:
        """The model in eval mode with these weights."""
        model = create_model(self.arch, num_classes=self.config["num_classes"],
                             input_size=self.config["input_size"])
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            why = first[1].strip() if len(first) > 1 else first[0]
            why = why if len(why) <= 300 else why[:300] + " ..."  # "Missing key(s)" can list hundreds
            raise UserError(f"checkpoint weights do not fit {self.arch}: {why}") from e
        return model.eval()

    def to_dict(self) -> dict:
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "arch": self.arch, "config": self.config,
                "state_dict": self.state_dict, "classes": list(self.classes),
                "preprocessing": self.preprocessing.to_dict(), "metrics": self.metrics,
                "provenance": {"wae_deploy": __version__, "torch": str(torch.__version__), **self.provenance}}


def save(ckpt: Checkpoint, path: str | Path) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    with atomic.atomic_path(path) as tmp:
        torch.save(ckpt.to_dict(), tmp)


def read_weights_only(path: str | Path):
    """torch.load(weights_only=True) with one clean error for files holding code, junk or nothing."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Random bytes also end here (torch falls back to its legacy pickle reader): only a file
        # that is a torch zip archive or a pickle stream (PROTO opcode 0x80) can be "holding code".
        with open(path, "rb") as f:
            pickled = f.read(1) == b"\x80" or zipfile.is_zipfile(path)
        if not pickled:
            raise UserError(f"not a readable checkpoint (truncated or corrupt): {path}") from e
        raise UserError(f"refusing {path}: it holds pickled objects or code, not plain weights "
                        "(only weights_only checkpoints are loaded)") from e
    except Exception as e:  # noqa: BLE001 - on junk bytes torch's reader raises RuntimeError, struct.error, ...
        raise UserError(f"not a readable checkpoint (truncated or corrupt): {path}") from e
    return raw


def load(path: str | Path) -> Checkpoint:
    path = Path(path)
    raw = read_weights_only(path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UserError(f"not a wae-deploy checkpoint: {path} (for plain weights, a state_dict or "
                        ".safetensors file, name the model: --arch NAME)")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(missing)}")
    if raw["schema_version"] != SCHEMA_VERSION:
        raise UserError(f"checkpoint {path} has schema version {raw['schema_version']}; "
                        f"this wae-deploy reads {SCHEMA_VERSION}")
    parse_arch(str(raw["arch"]))  # unknown architectures fail here with the list of known ones
    config = raw["config"]
    if not isinstance(config, dict) or not {"num_classes", "input_size"} <= set(config):
        raise UserError(f"checkpoint {path} has no num_classes/input_size in its config")
    if not all(type(config[k]) is int and config[k] > 0 for k in ("num_classes", "input_size")):
        raise UserError(f"checkpoint {path} has a malformed config: "
                        "num_classes and input_size must be positive integers")
    if not isinstance(raw["state_dict"], dict):
        raise UserError(f"checkpoint {path} has no weights")
    if not isinstance(raw["classes"], (list, tuple)) or not isinstance(raw["preprocessing"], dict):
        raise UserError(f"checkpoint {path} has malformed classes or preprocessing")
    if not isinstance(raw.get("metrics") or {}, dict) or not isinstance(raw.get("provenance") or {}, dict):
        raise UserError(f"checkpoint {path} has malformed metrics or provenance")
    return Checkpoint(arch=str(raw["arch"]), config=config, state_dict=raw["state_dict"],
                      classes=[str(c) for c in raw["classes"]],
                      preprocessing=Preprocessing.from_dict(raw["preprocessing"]),
                      metrics=raw.get("metrics") or {}, provenance=raw.get("provenance") or {})


def untrained(arch: str) -> Checkpoint:
    """A checkpoint with the architecture's initial weights: for speed benchmarks, never for accuracy."""
    from wae_deploy.training.models import default_preprocessing

    spec = default_preprocessing(arch)
    family = parse_arch(arch)[1]
    torch.manual_seed(0)
    model = create_model(arch).eval()
    return Checkpoint(arch=arch, config={"num_classes": family.num_classes, "input_size": spec.crop},
                      state_dict=model.state_dict(), classes=[str(i) for i in range(family.num_classes)],
                      preprocessing=spec, metrics={"untrained": True}, provenance={"untrained": True})


def untrained_file(arch: str, folder: Path) -> Path:
    """`folder/<arch>.pt`, an untrained checkpoint of `arch` (written once): the paper suite times these."""
    path = Path(folder) / f"{arch}.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save(untrained(arch), path)
    return path
