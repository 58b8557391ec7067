"""Weights that wae-deploy did not train: read a foreign state dict and fit it to a registered model.

Sources: a torch file (bare state_dict, or wrapped in {"state_dict"|"model"|"model_state_dict": ...},
with or without DDP's "module." prefix), always read with weights_only; a .safetensors file,
whose header is checked against the file before a byte of tensor data is read; or a state dict
already in memory (the Caffe reader's). Matching is strict: every key, every shape.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import torch

from wae_deploy.core.errors import UserError
from wae_deploy.runtime.preprocess import CIFAR, IMAGENET, Preprocessing
from wae_deploy.training import checkpoint, keymaps
from wae_deploy.training.checkpoint import Checkpoint
from wae_deploy.training.models import create_model, list_archs, parse_arch
from wae_deploy.training.models.assemble import VARIANTS

WRAPPERS = ("state_dict", "model", "model_state_dict")
# Bytes per element of each safetensors dtype: the header's shapes and offsets must agree with these.
SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                        "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
PRESETS = {"imagenet": IMAGENET, "cifar10": CIFAR}


class WeightsMismatch(UserError):
    """Keys or shapes that do not fit; `details` is the full list, one line per key."""

    def __init__(self, message: str, details: list[str]):
        super().__init__(message)
        self.details = details


def read(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a torch or safetensors file, unwrapped and without DDP prefixes."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    raw = checkpoint.read_weights_only(path)
    for _ in range(3):  # {"model": {"state_dict": ...}} happens too
        if not isinstance(raw, dict) or all(isinstance(v, torch.Tensor) for v in raw.values()):
            break
        inner = next((raw[k] for k in WRAPPERS if isinstance(raw.get(k), dict)), None)
        if inner is None:
            break
        raw = inner
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path} holds no state dict (expected a dict of tensors, or one under "
                        f"{', '.join(repr(k) for k in WRAPPERS)})")
    odd = next((k for k, v in raw.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise UserError(f"{path}: entry {odd!r} is a {type(raw[odd]).__name__}, not a tensor "
                        f"(expected a state dict, or one under {', '.join(repr(k) for k in WRAPPERS)})")
    if all(str(k).startswith("module.") for k in raw):  # saved from DistributedDataParallel / DataParallel
        raw = {k[len("module."):]: v for k, v in raw.items()}
    return {str(k): v for k, v in raw.items()}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Check the header's claims against the file, then load: a lying header never allocates."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"not a safetensors file (truncated header): {path}")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise UserError(f"refusing {path}: its safetensors header claims {n} bytes, the file holds {size - 8}")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError) as e:
            raise UserError(f"refusing {path}: its safetensors header is not valid JSON (truncated or corrupt)") from e
    if not isinstance(header, dict):
        raise UserError(f"refusing {path}: its safetensors header is not a JSON object")
    room = size - 8 - n
    spans, claimed = [], 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
            if not (type(begin) is int and type(end) is int and 0 <= begin <= end and all(d >= 0 for d in shape)):
                raise ValueError
            itemsize = SAFETENSORS_ITEMSIZE[dtype]
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"refusing {path}: malformed safetensors entry for {name!r}") from e
        if end - begin != math.prod(shape) * itemsize:
            raise UserError(f"refusing {path}: tensor {name!r} is {dtype} {shape} ({math.prod(shape) * itemsize} "
                            f"bytes) but its offsets span {end - begin} bytes")
        spans.append((begin, end, name))
        claimed = max(claimed, end)
    if claimed > room:
        raise UserError(f"refusing {path}: its header claims {claimed} bytes of tensors, the file holds {room} "
                        "(truncated, or the header lies)")
    spans.sort()
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise UserError(f"refusing {path}: tensors {a!r} and {b!r} overlap in the file")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"not a readable safetensors file: {path}: {str(e)[:200]}") from e
    if not state:
        raise UserError(f"{path} holds no tensors")
    return state


def to_float32(state: dict[str, torch.Tensor], allow_nonfinite: bool = False, where: str = "weights",
               warn=print) -> dict[str, torch.Tensor]:
    """fp16/bf16/fp64 -> fp32; integer weights and NaN/Inf refused (only BatchNorm's step counter is an int)."""
    out, bad = {}, []
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            out[k] = v.to(torch.int64)
            continue
        if not v.is_floating_point():
            raise UserError(f"{where}: {k!r} holds {str(v.dtype).replace('torch.', '')} values; weights must "
                            "be floating point (fp32, fp16, bf16 or fp64)")
        v = v.to(torch.float32)
        if not bool(torch.isfinite(v).all()):
            bad.append(k)
        out[k] = v
    if bad:
        what = f"{len(bad)} tensor(s) hold NaN or Inf values (first: {bad[0]!r})"
        if not allow_nonfinite:
            raise UserError(f"{where}: {what}; refused (--allow-nonfinite takes them anyway)")
        warn(f"warning: {where}: {what}; kept because of --allow-nonfinite")
    return out


def fit(state: dict[str, torch.Tensor], arch: str, num_classes: int | None, input_size: int | None,
        where: str = "weights") -> None:
    """Raise WeightsMismatch unless `state` has exactly the model's keys and shapes."""
    model = _meta_model(arch, num_classes, input_size)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k, got, want = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k}: file {_dims(got)}, model {_dims(want)})")
    hint = suggest(state, arch, (num_classes, input_size))
    details = ([f"missing: {k} {_dims(tuple(expected[k].shape))}" for k in missing]
               + [f"unexpected: {k} {_dims(tuple(state[k].shape))}" for k in unexpected]
               + [f"shape: {k}: file {_dims(g)}, model {_dims(w)}" for k, g, w in shapes])
    raise WeightsMismatch(f"{where} do not fit --arch {arch}: " + "; ".join(parts)
                          + (f"; they fit {hint}" if hint else "") + " (--verbose lists every key)", details)


def suggest(state: dict[str, torch.Tensor], tried: str, tried_config: tuple = (None, None)) -> str | None:
    """The --arch/--num-classes/--input-size that fit `state` exactly, when the shapes tell.

    A flag is named when its value differs from the architecture's default or from what was tried.
    """
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    names = [tried] + [a for a in list_archs() + list(VARIANTS) if a != tried]
    for arch in names:
        family = parse_arch(arch)[1]
        expected = _meta_model(arch, None, None).state_dict()
        if set(expected) != set(shapes):
            continue
        # Class counts: whatever the file has where the model has the family's count as a leading dim.
        classes = {family.num_classes} | {shapes[k][0] for k, v in expected.items()
                                          if v.ndim and v.shape[0] == family.num_classes and shapes[k]}
        sizes = [family.preprocessing.crop] + [s for s in (32, 64, 96, 128, 160, 192, 224, 256, 299, 320)
                                               if s != family.preprocessing.crop]
        for n in sorted(classes, key=lambda c: c != family.num_classes):
            for size in sizes:
                try:
                    model = _meta_model(arch, n, size).state_dict()
                except UserError:
                    continue
                if all(tuple(model[k].shape) == shapes[k] for k in model):
                    flags = [f"--arch {arch}"]
                    if n != family.num_classes or (tried_config[0] or n) != n:
                        flags.append(f"--num-classes {n}")
                    if size != family.preprocessing.crop or (tried_config[1] or size) != size:
                        flags.append(f"--input-size {size}")
                    return " ".join(flags)
    return None


def _meta_model(arch: str, num_classes: int | None, input_size: int | None) -> torch.nn.Module:
    # On the meta device a model has its keys and shapes but no storage: checking fits costs nothing.
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_model(arch, num_classes=num_classes, input_size=input_size)


def _dims(shape: tuple) -> str:
    return "x".join(map(str, shape)) or "scalar"


def preprocessing(value: str | None, arch: str) -> Preprocessing:
    """--preprocessing: a preset name, a JSON file of the spec, or (None) the architecture's own."""
    if value is None:
        return parse_arch(arch)[1].preprocessing
    if value in PRESETS:
        return PRESETS[value]
    path = Path(value)
    if not path.is_file():
        raise UserError(f"--preprocessing {value!r} is neither {' nor '.join(PRESETS)} nor a JSON file")
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"--preprocessing {path}: not a readable JSON file ({type(e).__name__})") from e
    if not isinstance(spec, dict):
        raise UserError(f"--preprocessing {path}: expected a JSON object with resize, crop, mean, std")
    return Preprocessing.from_dict(spec)


def class_names(path: str | None, num_classes: int) -> list[str]:
    """--classes: one name per line; without it, the class indices."""
    if path is None:
        return [str(i) for i in range(num_classes)]
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--classes {path}: not a readable text file ({type(e).__name__})") from e
    if len(names) != num_classes:
        raise UserError(f"--classes {path} names {len(names)} classes; the model has {num_classes}")
    return names


def foreign_checkpoint(path: str | Path, arch: str, num_classes: int | None = None, input_size: int | None = None,
                       preprocessing_spec: str | None = None, classes: str | None = None,
                       allow_nonfinite: bool = False, state: dict | None = None, source_format: str | None = None,
                       warn=print) -> Checkpoint:
    """A wae-deploy checkpoint (in memory) from weights another tool wrote; `state` if already read."""
    path = Path(path)
    family = parse_arch(arch)[1]
    spec = preprocessing(preprocessing_spec, arch)
    if input_size and input_size != spec.crop:  # keep the spec's resize-to-crop ratio at the new size
        spec = dataclasses.replace(spec, crop=input_size, resize=max(input_size, spec.resize * input_size // spec.crop))
    size = spec.crop
    n = num_classes or family.num_classes
    state = read(path) if state is None else state
    state, layout = keymaps.to_project(state, arch)
    state = to_float32(state, allow_nonfinite, where=str(path), warn=warn)
    fit(state, arch, n, size, where=str(path))
    fmt = source_format or ("safetensors" if path.suffix == ".safetensors" else "torch")
    return Checkpoint(arch=arch, config={"num_classes": n, "input_size": size}, state_dict=state,
                      classes=class_names(classes, n), preprocessing=spec, metrics={},
                      provenance={"source": path.name, "source_sha256": checkpoint.sha256(path),
                                  "source_format": fmt, "source_layout": layout})


def import_weights(path: str | Path, arch: str | None, prototxt: str | None = None, warn=print,
                   **options) -> Checkpoint:
    """Foreign weights -> a checkpoint in memory: the authors' Caffe model (a .caffemodel, or any file
    with its prototxt) or a state_dict / .safetensors for `arch` (options: foreign_checkpoint's)."""
    state, fmt = None, None
    if Path(path).suffix == ".caffemodel" or prototxt:
        from wae_deploy.training import caffe

        arch = arch or caffe.ARCH
        state, fmt = caffe.read(path, prototxt, arch), "caffemodel"
        classes, size = caffe.net_config(prototxt)
        options["num_classes"] = options.get("num_classes") or classes
        options["input_size"] = options.get("input_size") or size
    if not arch:
        raise UserError(f"{path}: name the model these weights are for with --arch NAME")
    ckpt = foreign_checkpoint(path, arch, state=state, source_format=fmt, warn=warn, **options)
    if fmt == "caffemodel":
        ckpt.provenance["note"] = caffe.DECODER_NOTE
    return ckpt
