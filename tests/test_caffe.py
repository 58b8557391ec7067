"""The authors' released WAE-VGG16 (.caffemodel + prototxt), imported without Caffe.

The release cannot be downloaded here, so a prototxt with the release's layers is written from
the layer list below, and a caffemodel of random weights through the reader's own schema, in the
current and the legacy V1 encodings. The converted model is checked against a NumPy forward pass
of that layer list with Caffe's semantics (ceil-mode pooling, BatchNorm statistics over the
moving-average factor), written here independently of the project's modules. The fixture uses a
64-pixel crop (32x32 sub-images, pool5 1x1) and 10 classes: the same layers and code path as
the 224-pixel release at a twelfth of the work; the widths are the release's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from wae_deploy.cli import main
from wae_deploy.core.errors import UserError
from wae_deploy.training import caffe, checkpoint, weights
from wae_deploy.training.export import export

CROP, CLASSES = 64, 10
STAGES = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]


def release_layers(crop=CROP, classes=CLASSES) -> list[dict]:
    """The authors' wae_vgg.prototxt as a layer list (wae-paper.md), bottoms and tops included."""
    L = [{"name": "data", "type": "Data", "top": ["data", "label"], "crop": crop}]

    def conv(name, bottom, out, stride=1):
        L.append({"name": name, "type": "Convolution", "bottom": [bottom], "top": [name], "out": out,
                  "stride": stride})

    def relu(name, blob):
        L.append({"name": name, "type": "ReLU", "bottom": [blob], "top": [blob]})

    def fc(name, bottom, out):
        L.append({"name": name, "type": "InnerProduct", "bottom": [bottom], "top": [name], "out": out})

    prev = "data"
    for i in (1, 2, 3):
        conv(f"decom_conv{i}", prev, 16)
        relu(f"decom_relu{i}", f"decom_conv{i}")
        prev = f"decom_conv{i}"
    for b in ("CA", "CH"):
        conv(f"decom_conv_{b}", "decom_conv3", 3, stride=2)
    for b in ("CA", "CH"):
        L.append({"name": f"bn_{b}", "type": "BatchNorm", "bottom": [f"decom_conv_{b}"], "top": [f"bn_{b}"]})
    for b, width in (("CA", 1), ("CH", 4)):
        prev = f"bn_{b}"
        for s, (out, n) in enumerate(STAGES, 1):
            for r in range(1, n + 1):
                conv(f"conv{s}_{r}_{b}", prev, out // width)
                relu(f"relu{s}_{r}_{b}", f"conv{s}_{r}_{b}")
                prev = f"conv{s}_{r}_{b}"
            L.append({"name": f"pool{s}_{b}", "type": "Pooling", "bottom": [prev], "top": [f"pool{s}_{b}"]})
            prev = f"pool{s}_{b}"
        if b == "CA":
            L.append({"name": "pool5_CA_split", "type": "Split", "bottom": ["pool5_CA"],
                      "top": ["pool5_CA_a", "pool5_CA_b"]})
            prev = "pool5_CA_a"
            for n, out in ((6, 1024), (7, 1024)):
                fc(f"fc{n}_CA", prev, out)
                relu(f"relu{n}_CA", f"fc{n}_CA")
                L.append({"name": f"drop{n}_CA", "type": "Dropout", "bottom": [f"fc{n}_CA"], "top": [f"fc{n}_CA"]})
                prev = f"fc{n}_CA"
            fc("fc8_CA", prev, classes)
    L.append({"name": "concat_fusion", "type": "Concat", "bottom": ["pool5_CA_b", "pool5_CH"], "top": ["concat"]})
    prev = "concat"
    for n, out in ((6, 2048), (7, 2048)):
        fc(f"fc{n}_fusion", prev, out)
        relu(f"relu{n}_fusion", f"fc{n}_fusion")
        L.append({"name": f"drop{n}_fusion", "type": "Dropout", "bottom": [f"fc{n}_fusion"], "top": [f"fc{n}_fusion"]})
        prev = f"fc{n}_fusion"
    fc("fc8_fusion", prev, classes)
    L.append({"name": "score-sum", "type": "Eltwise", "bottom": ["fc8_CA", "fc8_fusion"], "top": ["score"]})
    return L


V1_TYPES = {"Data": "DATA", "Convolution": "CONVOLUTION", "ReLU": "RELU", "Pooling": "POOLING",
            "InnerProduct": "INNER_PRODUCT", "Dropout": "DROPOUT", "Concat": "CONCAT", "Eltwise": "ELTWISE",
            "Split": "SPLIT", "BatchNorm": "BATCHNORM"}
V1_ENUM = {"CONVOLUTION": 4, "INNER_PRODUCT": 14, "BATCHNORM": 0}


def prototxt(layers, legacy=False) -> str:
    out = ['name: "WAE_VGG"']
    for layer in layers:
        kind = V1_TYPES[layer["type"]] if legacy else layer["type"]
        body = [f'name: "{layer["name"]}"', f"type: {kind}" if legacy else f'type: "{kind}"']
        body += [f'bottom: "{b}"' for b in layer.get("bottom", [])] + [f'top: "{t}"' for t in layer["top"]]
        t = layer["type"]
        if t == "Data":
            body.append(f"transform_param {{ crop_size: {layer['crop']} mirror: false }}")
        elif t == "Convolution":
            body.append(f"convolution_param {{ num_output: {layer['out']} kernel_size: 3 stride: {layer['stride']} "
                        "pad: 1 }")
        elif t == "InnerProduct":
            body.append(f"inner_product_param {{ num_output: {layer['out']} }}")
        elif t == "Pooling":
            body.append("pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
        elif t == "BatchNorm":
            body.append("batch_norm_param { use_global_stats: true }  # no Scale layer follows")
        elif t == "Dropout":
            body.append("dropout_param { dropout_ratio: 0.5 }")
        elif t == "Eltwise":
            body.append("eltwise_param { operation: SUM }")
        out.append(("layers" if legacy else "layer") + " {\n  " + "\n  ".join(body) + "\n}")
    return "\n".join(out) + "\n"


def random_blobs(layers, seed=0) -> dict[str, list[np.ndarray]]:
    """Caffe-shaped blobs: conv (out, in, 3, 3) + (out,), fc (out, in) + (out,), BN mean*s, var*s, s."""
    rng = np.random.default_rng(seed)
    channels, side, blobs = {"data": 3}, {"data": layers[0]["crop"]}, {}
    for layer in layers:
        t, bottom = layer["type"], layer.get("bottom", [None])[0]
        if t == "Convolution":
            cin = channels[bottom]
            w = rng.standard_normal((layer["out"], cin, 3, 3)).astype(np.float32) * math.sqrt(2 / (9 * cin))
            blobs[layer["name"]] = [w, rng.standard_normal(layer["out"]).astype(np.float32) * 0.1]
            channels[layer["name"]], side[layer["name"]] = layer["out"], -(-side[bottom] // layer["stride"])
        elif t == "BatchNorm":
            s = np.float32(2.5)
            blobs[layer["name"]] = [(rng.standard_normal(3) * 20).astype(np.float32) * s,
                                    (rng.random(3) * 400 + 50).astype(np.float32) * s, np.array([s], np.float32)]
            channels[layer["name"]], side[layer["name"]] = 3, side[bottom]
        elif t == "Pooling":
            channels[layer["name"]], side[layer["name"]] = channels[bottom], -(-side[bottom] // 2)
        elif t == "Concat":
            channels["concat"], side["concat"] = sum(channels[b] for b in layer["bottom"]), side[layer["bottom"][1]]
        elif t == "Split":
            for top in layer["top"]:
                channels[top], side[top] = channels[bottom], side[bottom]
        elif t == "InnerProduct":
            n = channels[bottom] * side[bottom] ** 2
            w = rng.standard_normal((layer["out"], n)).astype(np.float32) * math.sqrt(2 / n)
            blobs[layer["name"]] = [w, rng.standard_normal(layer["out"]).astype(np.float32) * 0.1]
            channels[layer["name"]], side[layer["name"]] = layer["out"], 1
    return blobs


def write_caffemodel(path, blobs, legacy=False):
    net = caffe.SCHEMA["NetParameter"](name="WAE_VGG")
    for name, arrays in blobs.items():
        layer = net.layers.add(name=name, type=V1_ENUM["CONVOLUTION" if arrays[0].ndim == 4 else
                                                      "INNER_PRODUCT" if len(arrays) == 2 else "BATCHNORM"]) \
            if legacy else net.layer.add(name=name, type="Convolution" if arrays[0].ndim == 4 else
                                         "InnerProduct" if len(arrays) == 2 else "BatchNorm")
        for a in arrays:
            blob = layer.blobs.add()
            if legacy:  # V1 blobs: num, channels, height, width, padded with leading 1s
                dims = (1,) * (4 - a.ndim) + a.shape
                blob.num, blob.channels, blob.height, blob.width = dims
            else:
                blob.shape.dim.extend(a.shape)
            blob.data.extend(a.ravel().tolist())
    path.write_bytes(net.SerializeToString())
    return path


# ---- the independent NumPy forward pass of the layer list, with Caffe's semantics ---------------------

def np_conv(x, w, b, stride):
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = (h - 1) // stride + 1, (wd - 1) // stride + 1  # Caffe: floor((h + 2 - 3) / s) + 1
    cols = np.stack([xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] for i in range(3) for j in range(3)],
                    axis=2)  # n, c, 9, oh, ow
    cols = cols.reshape(n, c * 9, oh * ow)
    return (np.einsum("ok,nkp->nop", w.reshape(w.shape[0], -1), cols, optimize=True)
            + b[None, :, None]).reshape(n, -1, oh, ow)


def np_maxpool_ceil(x):
    n, c, h, w = x.shape
    oh, ow = math.ceil((h - 2) / 2) + 1, math.ceil((w - 2) / 2) + 1
    xp = np.full((n, c, 2 * oh, 2 * ow), -np.inf, x.dtype)  # windows past the edge are clipped
    xp[:, :, :h, :w] = x
    return xp.reshape(n, c, oh, 2, ow, 2).max((3, 5))


def numpy_forward(layers, blobs, images: np.ndarray) -> np.ndarray:
    """images: N x 3 x crop x crop, raw BGR 0-255 as Caffe's Data layer gives them."""
    t = {"data": images.astype(np.float64)}
    for layer in layers:
        kind, name = layer["type"], layer["name"]
        x = t.get(layer.get("bottom", [None])[0])
        if kind == "Convolution":
            w, b = blobs[name]
            y = np_conv(x, w.astype(np.float64), b.astype(np.float64), layer["stride"])
        elif kind == "ReLU":
            y = np.maximum(x, 0)
        elif kind == "BatchNorm":
            mean, var, s = blobs[name]
            f = 0.0 if s[0] == 0 else 1.0 / s[0]
            y = (x - mean[None, :, None, None] * f) / np.sqrt(var[None, :, None, None] * f + 1e-5)
        elif kind == "Pooling":
            y = np_maxpool_ceil(x)
        elif kind == "InnerProduct":
            w, b = blobs[name]
            y = x.reshape(len(x), -1) @ w.T.astype(np.float64) + b
        elif kind == "Concat":
            y = np.concatenate([t[b] for b in layer["bottom"]], axis=1)
        elif kind == "Eltwise":
            y = sum(t[b] for b in layer["bottom"])
        elif kind in ("Dropout", "Data"):
            continue
        elif kind == "Split":
            for top in layer["top"]:
                t[top] = x
            continue
        t[layer["top"][0]] = y
    return t["score"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    layers = release_layers()
    blobs = random_blobs(layers)
    (root / "wae_vgg.prototxt").write_text(prototxt(layers))
    (root / "wae_vgg_v1.prototxt").write_text(prototxt(layers, legacy=True))
    write_caffemodel(root / "wae_vgg.caffemodel", blobs)
    write_caffemodel(root / "wae_vgg_v1.caffemodel", blobs, legacy=True)
    images = np.random.default_rng(5).integers(0, 256, (3, 3, CROP, CROP)).astype(np.float32)
    return {"root": root, "layers": layers, "blobs": blobs, "images": images,
            "reference": numpy_forward(layers, blobs, images)}


def _run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "v1-layers"])
def test_converted_release_matches_the_numpy_forward_pass(release, legacy, tmp_path):
    root, v1 = release["root"], "_v1" if legacy else ""
    out = tmp_path / "wae-vgg16-authors.pt"
    code, text = _run("convert", root / f"wae_vgg{v1}.caffemodel", "--prototxt", root / f"wae_vgg{v1}.prototxt",
                      "-o", out)
    assert code == 0, text
    ckpt = checkpoint.load(out)
    assert ckpt.arch == "wae-vgg16-authors" and ckpt.config == {"num_classes": CLASSES, "input_size": CROP}
    spec = ckpt.preprocessing
    assert (spec.scale, spec.mean, spec.std, spec.channel_order) == (1.0, (0, 0, 0), (1, 1, 1), "BGR")
    model = ckpt.build_model()
    assert model.main.out_dim == 512 and model.fusion[0].in_features == 640  # ceil-mode pool5 (1x1 on 32)
    with torch.no_grad():
        got = model(torch.from_numpy(release["images"])).double().numpy()
    want = release["reference"]
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-4, rel
    assert (got.argmax(1) == want.argmax(1)).all()
    card = out.with_suffix(".md").read_text()
    assert "caffemodel" in card and "accuracy: not measured" in card and "decoder" in card


def test_full_size_release_has_the_papers_shapes():
    """At the release's 224 crop: pool5 is 4x4, so fc6_CA reads 8192 and fc6_fusion 10240."""
    from wae_deploy.training.models import create_model

    with torch.device("meta"):
        model = create_model("wae-vgg16-authors")
    assert model.main.head[0].in_features == 8192 and model.fusion[0].in_features == 10240
    assert model.main.head[6].out_features == 1000


def test_converted_release_exports_with_parity(release, tmp_path):
    root = release["root"]
    ckpt_path = tmp_path / "authors.pt"
    assert _run("convert", root / "wae_vgg.caffemodel", "--prototxt", root / "wae_vgg.prototxt", "-o",
                ckpt_path)[0] == 0
    data = tmp_path / "images" / "test"
    for c in range(2):
        (data / str(c)).mkdir(parents=True)
        for i in range(2):
            pixels = np.random.default_rng(10 * c + i).integers(0, 256, (80, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(data / str(c) / f"{i}.png")
    result = export(ckpt_path, tmp_path / "authors.onnx", verify=4, data=tmp_path / "images", log=lambda *a: None)
    p = result.manifest["parity"]
    assert p["n"] == 4 and p["max_abs_diff"] <= 1e-4 and p["top1_agreement"] == 1.0


def test_missing_layer_or_wrong_blob_is_one_line_naming_the_layer(release, tmp_path):
    root, layers, blobs = release["root"], release["layers"], release["blobs"]
    proto = root / "wae_vgg.prototxt"
    cases = {}
    cases["fc7_CA"] = write_caffemodel(tmp_path / "missing.caffemodel",
                                       {k: v for k, v in blobs.items() if k != "fc7_CA"})
    wrong = dict(blobs, conv3_2_CH=[blobs["conv3_2_CH"][0][:, :32], blobs["conv3_2_CH"][1]])
    cases["conv3_2_CH"] = write_caffemodel(tmp_path / "wrong.caffemodel", wrong)
    for layer, path in cases.items():
        out = tmp_path / f"{path.stem}.pt"
        code, text = _run("convert", path, "--prototxt", proto, "-o", out)
        assert code == 2 and f"'{layer}'" in text and len(text.strip().splitlines()) == 1, text
        assert not out.exists() and not out.with_suffix(".md").exists()
    short = tmp_path / "short.prototxt"
    short.write_text(prototxt([la for la in layers if la["name"] != "bn_CH"]))
    code, text = _run("convert", root / "wae_vgg.caffemodel", "--prototxt", short, "-o", tmp_path / "s.pt")
    assert code == 2 and "'bn_CH'" in text
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes((root / "wae_vgg.caffemodel").read_bytes()[:5000])
    code, text = _run("convert", cut, "--prototxt", proto, "-o", tmp_path / "c.pt")
    assert code == 2 and "truncated or corrupt" in text
    code, text = _run("convert", root / "wae_vgg.caffemodel", "-o", tmp_path / "n.pt")
    assert code == 2 and "--prototxt" in text


def test_batchnorm_factor_zero_means_zero_statistics(release, tmp_path):
    blobs = dict(release["blobs"])
    blobs["bn_CA"] = [blobs["bn_CA"][0], blobs["bn_CA"][1], np.zeros(1, np.float32)]
    path = write_caffemodel(tmp_path / "s0.caffemodel", blobs)
    state = caffe.read(path, release["root"] / "wae_vgg.prototxt")
    assert not state["norm_low.running_mean"].any() and not state["norm_low.running_var"].any()
    assert torch.allclose(state["norm_high.running_mean"], torch.from_numpy(blobs["bn_CH"][0] / 2.5))


def test_prototxt_reader_handles_comments_quotes_and_refuses_junk():
    net = caffe.parse_prototxt('name: "n" # c\nlayer { name: \'a\' type: "ReLU" param { lr_mult: 1 } }\n')
    assert net["layer"][0]["name"] == ["a"] and net["layer"][0]["param"][0]["lr_mult"] == ["1"]
    for junk in ("layer { name: 'a'", "layer }", "name"):
        with pytest.raises(UserError):
            caffe.parse_prototxt(junk)


@pytest.mark.slow
def test_full_size_release_matches_the_numpy_forward_pass(tmp_path):
    """The release's own sizes (224 crop, 1000 classes, a 213 MB caffemodel): about 25 s."""
    layers = release_layers(224, 1000)
    blobs = random_blobs(layers, seed=1)
    (tmp_path / "p.prototxt").write_text(prototxt(layers))
    write_caffemodel(tmp_path / "m.caffemodel", blobs)
    images = np.random.default_rng(6).integers(0, 256, (2, 3, 224, 224)).astype(np.float32)
    want = numpy_forward(layers, blobs, images)
    state = caffe.read(tmp_path / "m.caffemodel", tmp_path / "p.prototxt")
    ckpt = weights.foreign_checkpoint(tmp_path / "m.caffemodel", "wae-vgg16-authors", state=state)
    with torch.no_grad():
        got = ckpt.build_model()(torch.from_numpy(images)).double().numpy()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4
