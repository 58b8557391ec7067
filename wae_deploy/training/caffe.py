"""The authors' released WAE-VGG16 (.caffemodel + TEST prototxt) -> a `wae-vgg16-authors` state dict.

No Caffe needed: the .caffemodel is a protobuf NetParameter read through the few fields below
(field numbers from caffe.proto, see ../shared/docs/wae-paper.md), in the current (`layer`,
100) or the legacy V1 (`layers`, 2) encoding. The prototxt is protobuf text; `parse_prototxt`
reads its structure without a schema, enough to check that the net is the one the variant
builds (layer names, types, widths, strides, pads, pooling) before any weight is taken.
Layers of the caffemodel that the prototxt does not name (the training-only decoder, say) are
ignored, as Caffe ignores them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from wae_deploy.core.errors import UserError
from wae_deploy.training.models.vgg import VGG16_STAGES, conv_indices

ARCH = "wae-vgg16-authors"
DECODER_NOTE = ("the decoder (training only) is not in the TEST release: its weights are untrained, "
                "so inspect's reconstruction means nothing")
MAX_FILE = 2 * 1024 ** 3 - 1  # protobuf's limit for one message


def _schema():
    """NetParameter, LayerParameter, V1LayerParameter, BlobProto and BlobShape: only the fields read here."""
    f = descriptor_pb2.FileDescriptorProto(name="wae_caffe_subset.proto", package="wae_caffe", syntax="proto2")
    T = descriptor_pb2.FieldDescriptorProto
    opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED

    def message(name, *fields):
        m = f.message_type.add(name=name)
        for fname, number, label, ftype, type_name, packed in fields:
            field = m.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                field.type_name = f".wae_caffe.{type_name}"
            if packed:
                field.options.packed = True

    message("BlobShape", ("dim", 1, rep, T.TYPE_INT64, None, True))
    message("BlobProto", ("num", 1, opt, T.TYPE_INT32, None, False), ("channels", 2, opt, T.TYPE_INT32, None, False),
            ("height", 3, opt, T.TYPE_INT32, None, False), ("width", 4, opt, T.TYPE_INT32, None, False),
            ("data", 5, rep, T.TYPE_FLOAT, None, True), ("shape", 7, opt, T.TYPE_MESSAGE, "BlobShape", False),
            ("double_data", 8, rep, T.TYPE_DOUBLE, None, True))
    message("LayerParameter", ("name", 1, opt, T.TYPE_STRING, None, False),
            ("type", 2, opt, T.TYPE_STRING, None, False), ("blobs", 7, rep, T.TYPE_MESSAGE, "BlobProto", False))
    # V1's `type` is an enum; as a varint on the wire it reads the same as an int32.
    message("V1LayerParameter", ("name", 4, opt, T.TYPE_STRING, None, False),
            ("type", 5, opt, T.TYPE_INT32, None, False), ("blobs", 6, rep, T.TYPE_MESSAGE, "BlobProto", False))
    message("NetParameter", ("name", 1, opt, T.TYPE_STRING, None, False),
            ("layers", 2, rep, T.TYPE_MESSAGE, "V1LayerParameter", False),
            ("layer", 100, rep, T.TYPE_MESSAGE, "LayerParameter", False))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"wae_caffe.{name}"))
            for name in ("NetParameter", "LayerParameter", "V1LayerParameter", "BlobProto", "BlobShape")}


SCHEMA = _schema()

# The prototxt's layer types, in the current spelling and the legacy V1 enum's.
TYPE_NAMES = {"CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "POOLING": "Pooling",
              "RELU": "ReLU", "DROPOUT": "Dropout", "CONCAT": "Concat", "ELTWISE": "Eltwise", "SPLIT": "Split",
              "DATA": "Data", "BATCHNORM": "BatchNorm", "SOFTMAX": "Softmax", "ACCURACY": "Accuracy"}


# ---- prototxt: protobuf text format, read as nested dicts of lists --------------------------------

_TOKEN = re.compile(r'\s+|#[^\n]*|(?P<tok>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{}:;,]|[^\s{}:;,#"\']+)')


def parse_prototxt(text: str, where: str = "prototxt") -> dict:
    """`key: value` and `key { ... }` -> {key: [value or dict, ...]} (every key may repeat)."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise UserError(f"{where}: cannot read the text at character {pos}")
        pos = m.end()
        if m["tok"] and m["tok"] not in (";", ","):
            tokens.append(m["tok"])
    root: dict = {}
    stack, i = [root], 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "}":
            if len(stack) == 1:
                raise UserError(f"{where}: unbalanced '}}'")
            stack.pop()
            i += 1
            continue
        if i + 1 >= len(tokens):
            raise UserError(f"{where}: {tok!r} has no value (truncated?)")
        nxt = tokens[i + 1]
        if nxt == "{" or (nxt == ":" and i + 2 < len(tokens) and tokens[i + 2] == "{"):
            child: dict = {}
            stack[-1].setdefault(tok, []).append(child)
            stack.append(child)
            i += 2 if nxt == "{" else 3
        elif nxt == ":" and i + 2 < len(tokens):
            value = tokens[i + 2]
            stack[-1].setdefault(tok, []).append(value[1:-1] if value[:1] in "\"'" else value)
            i += 3
        else:
            raise UserError(f"{where}: expected ':' or '{{' after {tok!r}")
    if len(stack) != 1:
        raise UserError(f"{where}: unbalanced '{{' (truncated?)")
    return root


def _one(d: dict, key: str, default=None):
    return d.get(key, [default])[-1]


def prototxt_layers(path: str | Path) -> dict[str, dict]:
    """name -> {"type", "params" (the *_param block), "top", "bottom"}, in the prototxt's order."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the prototxt {path}: {getattr(e, 'strerror', None) or type(e).__name__}") from e
    net = parse_prototxt(text, str(path))
    layers = {}
    for layer in net.get("layer", []) + net.get("layers", []):
        if not isinstance(layer, dict) or not isinstance(_one(layer, "name"), str):
            raise UserError(f"{path}: a layer without a name")
        kind = str(_one(layer, "type", ""))
        params = next((v[-1] for k, v in layer.items() if k.endswith("_param") and isinstance(v[-1], dict)), {})
        layers[_one(layer, "name")] = {"type": TYPE_NAMES.get(kind, kind), "params": params, "layer": layer}
    if not layers:
        raise UserError(f"{path} names no layers (not a Caffe net definition?)")
    return layers


def _input_size(layers: dict[str, dict]) -> int:
    """The crop_size of the Data layer (the release's 224)."""
    for spec in layers.values():
        crop = _one(_one(spec["layer"], "transform_param", {}) or {}, "crop_size")
        if crop is not None:
            return int(crop)
    return 224


def net_config(prototxt: str | Path) -> tuple[int, int]:
    """(classes, input size) of the net: fc8_CA's num_output and the Data layer's crop_size."""
    layers = prototxt_layers(prototxt)
    fc8 = layers.get("fc8_CA")
    if fc8 is None:
        raise UserError(f"{prototxt} has no layer 'fc8_CA'; {ARCH} needs it")
    try:
        return int(_one(fc8["params"], "num_output", 0)), _input_size(layers)
    except (TypeError, ValueError) as e:
        raise UserError(f"{prototxt}: fc8_CA's num_output or the crop_size is not a number") from e


# ---- caffemodel -----------------------------------------------------------------------------------

def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """layer name -> its blobs as float32 arrays in their own shapes (current or legacy V1 layers)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"caffemodel not found: {path}")
    if path.stat().st_size > MAX_FILE:
        raise UserError(f"refusing {path}: over 2 GB, more than one protobuf message can hold")
    net = SCHEMA["NetParameter"]()
    try:
        net.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as e:
        raise UserError(f"not a readable caffemodel (truncated or corrupt): {path}") from e
    layers = list(net.layer) or list(net.layers)
    if not layers:
        raise UserError(f"{path} holds no layers (not a caffemodel?)")
    blobs = {}
    for layer in layers:
        arrays = []
        for i, blob in enumerate(layer.blobs):
            if blob.HasField("shape"):
                shape = tuple(int(d) for d in blob.shape.dim)
            else:
                shape = tuple(int(d) for d in (blob.num, blob.channels, blob.height, blob.width))
            values = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
            if values.size != int(np.prod(shape, dtype=np.int64)):
                raise UserError(f"{path}: layer {layer.name!r} blob {i} holds {values.size} values "
                                f"for a shape of {'x'.join(map(str, shape))}")
            arrays.append(values.reshape(shape))
        blobs[layer.name] = arrays
    return blobs


# ---- the mapping: release layer -> the variant's module ---------------------------------------------

def _stage_names(suffix: str) -> list[str]:
    return [f"conv{s + 1}_{r + 1}_{suffix}" for s, (_, n) in enumerate(VGG16_STAGES) for r in range(n)]


def layer_map() -> dict[str, tuple[str, str]]:
    """Caffe layer -> (its type, the module that holds its weights in `wae-vgg16-authors`)."""
    m = {"decom_conv1": ("Convolution", "decomposer.body.0"), "decom_conv2": ("Convolution", "decomposer.body.2"),
         "decom_conv3": ("Convolution", "decomposer.body.4"), "decom_conv_CA": ("Convolution", "decomposer.low"),
         "decom_conv_CH": ("Convolution", "decomposer.high"),
         "bn_CA": ("BatchNorm", "norm_low"), "bn_CH": ("BatchNorm", "norm_high")}
    for branch, module in (("CA", "main"), ("CH", "high")):
        m.update({name: ("Convolution", f"{module}.features.{i}") for name, i in zip(_stage_names(branch),
                                                                                       conv_indices())})
    for head, module in (("CA", "main.head"), ("fusion", "fusion")):
        m.update({f"fc{n}_{head}": ("InnerProduct", f"{module}.{i}") for n, i in ((6, 0), (7, 3), (8, 6))})
    return m


# Layers whose hyper-parameters the variant fixes; widths are checked through the blobs' shapes.
_CONV_GEOMETRY = {"decom_conv_CA": (3, 2, 1), "decom_conv_CH": (3, 2, 1)}  # kernel, stride, pad; others 3, 1, 1
_WEIGHTLESS = {"ReLU", "Dropout", "Pooling", "Concat", "Eltwise", "Split", "Data", "Input", "Softmax", "Accuracy",
               "Silence", "Flatten", "SoftmaxWithLoss"}


def _check_layers(layers: dict[str, dict], where: str) -> None:
    try:
        _check_geometry(layers, where)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: a layer parameter that should be a number is not ({e})") from e


def _check_geometry(layers: dict[str, dict], where: str) -> None:
    mapping = layer_map()
    for name, (kind, _) in mapping.items():
        if name not in layers:
            raise UserError(f"{where} has no layer {name!r}; {ARCH} needs it")
        if layers[name]["type"] != kind:
            raise UserError(f"{where}: layer {name!r} is a {layers[name]['type']}, {ARCH} has a {kind} there")
        if kind == "Convolution":
            p = layers[name]["params"]
            got = tuple(int(_one(p, k, d)) for k, d in (("kernel_size", 0), ("stride", 1), ("pad", 0)))
            want = _CONV_GEOMETRY.get(name, (3, 1, 1))
            if got != want:
                raise UserError(f"{where}: layer {name!r} has kernel/stride/pad {got}, {ARCH} has {want}")
    for name, spec in layers.items():
        if name in mapping:
            continue
        if spec["type"] not in _WEIGHTLESS:
            raise UserError(f"{where}: layer {name!r} ({spec['type']}) has no place in {ARCH}")
        if spec["type"] == "Pooling":
            p = spec["params"]
            got = (str(_one(p, "pool", "MAX")), int(_one(p, "kernel_size", 0)), int(_one(p, "stride", 1)))
            if got != ("MAX", 2, 2):
                raise UserError(f"{where}: pooling layer {name!r} is {got}, {ARCH} pools MAX 2x2 stride 2")
        if spec["type"] == "Eltwise" and str(_one(spec["params"], "operation", "SUM")) != "SUM":
            raise UserError(f"{where}: layer {name!r} is not an Eltwise SUM; {ARCH} adds the two heads")


def read(caffemodel: str | Path, prototxt: str | Path | None, arch: str = ARCH) -> dict[str, torch.Tensor]:
    """The release's weights as a `wae-vgg16-authors` state dict (BatchNorm statistics un-scaled).

    The decoder is training-only and absent from the TEST release; it keeps the freshly built
    model's weights, so the state dict is complete (inspect's reconstruction is then meaningless).
    """
    from wae_deploy.training.models import create_model

    if prototxt is None:
        raise UserError(f"{caffemodel}: a .caffemodel needs its net definition: --prototxt FILE")
    if arch != ARCH:
        raise UserError(f"a .caffemodel converts to --arch {ARCH} (the authors' WAE-VGG16), not {arch}")
    layers = prototxt_layers(prototxt)
    _check_layers(layers, str(prototxt))
    blobs = read_caffemodel(caffemodel)
    classes, size = net_config(prototxt)
    torch.manual_seed(0)
    model = create_model(arch, num_classes=classes, input_size=size)
    expected = model.state_dict()
    state = {k: v for k, v in expected.items() if k.startswith("decoder.")}
    for name, (kind, module) in layer_map().items():
        got = blobs.get(name)
        if not got:
            raise UserError(f"{caffemodel} has no weights for layer {name!r} (named in {prototxt})")
        if kind == "BatchNorm":
            if len(got) != 3:
                raise UserError(f"{caffemodel}: BatchNorm layer {name!r} has {len(got)} blobs, not 3 "
                                "(mean, variance, moving-average factor)")
            s = float(got[2].reshape(-1)[0]) if got[2].size else 0.0
            factor = 0.0 if s == 0 else 1.0 / s  # Caffe: statistics are stored times s; s = 0 means zeros
            pairs = [("running_mean", got[0] * factor), ("running_var", got[1] * factor)]
            state[f"{module}.num_batches_tracked"] = torch.tensor(0)
        else:
            if len(got) != 2:
                raise UserError(f"{caffemodel}: layer {name!r} has {len(got)} blobs; {ARCH} needs weights and a bias")
            pairs = [("weight", got[0]), ("bias", got[1])]
        for param, value in pairs:
            key = f"{module}.{param}"
            want = tuple(expected[key].shape)
            if _squeeze(value.shape) != _squeeze(want):
                raise UserError(f"{caffemodel}: layer {name!r} {param} has shape {'x'.join(map(str, value.shape))}, "
                                f"{ARCH} at {size}x{size} needs {'x'.join(map(str, want))}")
            state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32).reshape(want))
    return state


def _squeeze(shape) -> tuple:
    """Legacy blobs pad shapes with leading 1s (a bias is 1x1x1xN, an fc weight 1x1xOUTxIN)."""
    shape = tuple(int(d) for d in shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape
