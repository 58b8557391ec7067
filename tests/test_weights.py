"""Foreign weights: every container and layout that export/convert take, and every bad input refused.

torchvision cannot be installed beside this torch, so its layouts are built here from their layer
lists (keys and shapes exactly as torchvision names them) and run through an independent
reference forward pass written with torch.nn.functional.
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import save_file

from wae_deploy.cli import main
from wae_deploy.core.errors import UserError
from wae_deploy.training import checkpoint, weights
from wae_deploy.training.models import create_model

CIFAR_ARCHS = ["wae-resnet20", "resnet20", "resnet20-resized", "resnet20-dwt"]


def _model(arch, **kw):
    torch.manual_seed(1)
    return create_model(arch, **kw).eval()


def _logits(model, x):
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def wae20():
    return _model("wae-resnet20")


def _containers(sd):
    return {"bare": sd, "wrapped-model": {"model": sd, "epoch": 3}, "wrapped-state_dict": {"state_dict": sd},
            "wrapped-model_state_dict": {"model_state_dict": sd, "optimizer": {"lr": 0.1}},
            "ddp": {f"module.{k}": v for k, v in sd.items()},
            "fp16": {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}}


@pytest.mark.parametrize("arch", CIFAR_ARCHS + ["vgg16-imagenette"])
def test_every_container_and_safetensors_gives_the_hand_loaded_logits(arch, tmp_path):
    model = _model(arch)
    size = 128 if "imagenette" in arch else 32
    x = torch.randn(3, 3, size, size)
    want = _logits(model, x)
    sd = model.state_dict()
    files = []
    for name, obj in _containers(sd).items():
        torch.save(obj, tmp_path / f"{name}.pth")
        files.append(tmp_path / f"{name}.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    files.append(tmp_path / "w.safetensors")
    for path in files:
        got = _logits(weights.foreign_checkpoint(path, arch).build_model(), x)
        tol = 2e-2 if "fp16" in path.name else 1e-6  # fp16 storage rounds the weights themselves
        assert (got - want).abs().max() <= tol * want.abs().max(), path.name
        assert (got.argmax(1) == want.argmax(1)).all() or "fp16" in path.name


def test_bf16_upcast_and_integer_weights_refused(wae20):
    sd = wae20.state_dict()
    out = weights.to_float32({k: v.bfloat16() if v.is_floating_point() else v for k, v in sd.items()})
    assert all(v.dtype == torch.float32 for k, v in out.items() if "num_batches" not in k)
    bad = dict(sd, **{"main.head.weight": sd["main.head.weight"].to(torch.int32)})
    with pytest.raises(UserError, match="main.head.weight.*int32.*floating point"):
        weights.to_float32(bad)


def test_nonfinite_refused_or_warned(wae20):
    sd = dict(wae20.state_dict())
    sd["fusion.0.weight"] = sd["fusion.0.weight"].clone()
    sd["fusion.0.weight"][0, 0] = float("nan")
    with pytest.raises(UserError, match="NaN or Inf.*fusion.0.weight.*--allow-nonfinite"):
        weights.to_float32(sd)
    said = []
    weights.to_float32(sd, allow_nonfinite=True, warn=said.append)
    assert len(said) == 1 and "warning" in said[0]


def _run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def test_cli_export_of_a_bare_state_dict_passes_parity(wae20, tmp_path):
    torch.save(wae20.state_dict(), tmp_path / "my_wae.pth")
    code, out = _run("export", tmp_path / "my_wae.pth", "--arch", "wae-resnet20", "--verify", "16")
    assert code == 0, out
    manifest = json.loads((tmp_path / "my_wae.json").read_text())
    assert manifest["parity"]["max_abs_diff"] <= 1e-4 and manifest["parity"]["top1_agreement"] == 1.0
    assert manifest["metadata"]["wae_deploy.checkpoint_sha256"] == checkpoint.sha256(tmp_path / "my_wae.pth")


def test_plain_weights_without_arch_say_how(wae20, tmp_path):
    torch.save(wae20.state_dict(), tmp_path / "w.pth")
    code, out = _run("export", tmp_path / "w.pth")
    assert code == 2 and "--arch" in out and len(out.strip().splitlines()) == 1


def test_mismatch_is_one_line_and_names_the_fix(wae20, tmp_path):
    torch.save(wae20.state_dict(), tmp_path / "w.pth")
    onnx = tmp_path / "w.onnx"
    code, out = _run("export", tmp_path / "w.pth", "--arch", "wae-resnet20", "--num-classes", "7", "-o", onnx)
    assert code == 2 and len(out.strip().splitlines()) == 1
    assert "4 of another shape" in out and "--num-classes 10" in out and not onnx.exists()
    code, out = _run("export", tmp_path / "w.pth", "--arch", "resnet20", "-o", onnx)
    assert code == 2 and "missing" in out and "unexpected" in out and "they fit --arch wae-resnet20" in out
    listing = tmp_path / "keys.txt"
    code, out = _run("convert", tmp_path / "w.pth", "--arch", "resnet20", "--verbose", listing, "-o",
                     tmp_path / "c.pt")
    lines = listing.read_text().splitlines()
    # No key is shared: every key of resnet20 is missing, every key of the WAE unexpected.
    assert code == 2 and len(lines) == len(create_model("resnet20").state_dict()) + len(wae20.state_dict())
    assert any(line.startswith("missing: net.features.0.0.weight") for line in lines)
    assert not (tmp_path / "c.pt").exists() and not (tmp_path / "c.md").exists()


def test_convert_writes_a_self_describing_checkpoint_and_card(wae20, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    save_file({k: v.contiguous() for k, v in wae20.state_dict().items()}, tmp_path / "w.safetensors")
    code, out = _run("convert", tmp_path / "w.safetensors", "--arch", "wae-resnet20", "--classes", classes,
                     "--preprocessing", "cifar10", "-o", tmp_path / "c.pt")
    assert code == 0, out
    ckpt = checkpoint.load(tmp_path / "c.pt")
    assert ckpt.arch == "wae-resnet20" and ckpt.classes[3] == "class3"
    assert ckpt.provenance["source_sha256"] == checkpoint.sha256(tmp_path / "w.safetensors")
    card = (tmp_path / "c.md").read_text()
    assert "converted from `w.safetensors`" in card and "accuracy: not measured" in card
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_logits(ckpt.build_model(), x), _logits(wae20, x))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/wae-weights-pwned",))


def _safetensors(path, header: dict, data: bytes = b"", claimed_len: int | None = None):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob) if claimed_len is None else claimed_len) + blob + data)
    return path


def test_bad_files_are_one_line_exit_2_and_write_nothing(tmp_path):
    cases = {}
    torch.save({"w": _Evil()}, tmp_path / "evil.pth")
    cases["evil.pth"] = "pickled objects or code"
    four = np.arange(4, dtype=np.float32).tobytes()
    _safetensors(tmp_path / "lie.safetensors", {"a": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 16]}}, four)
    cases["lie.safetensors"] = "offsets span 16 bytes"
    _safetensors(tmp_path / "beyond.safetensors", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}},
                 four)
    cases["beyond.safetensors"] = "claims 32 bytes of tensors, the file holds 16"
    _safetensors(tmp_path / "overlap.safetensors", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, four)
    cases["overlap.safetensors"] = "overlap"
    (tmp_path / "short.safetensors").write_bytes(b"\x05\x00")
    cases["short.safetensors"] = "truncated header"
    _safetensors(tmp_path / "hugehdr.safetensors", {"a": 1}, claimed_len=1 << 40)
    cases["hugehdr.safetensors"] = "header claims"
    (tmp_path / "cut.safetensors").write_bytes(struct.pack("<Q", 40) + b'{"a": {"dtype": "F32", "sha')
    cases["cut.safetensors"] = "header claims 40 bytes"
    for name, why in cases.items():
        out = tmp_path / f"{name}.onnx"
        code, text = _run("export", tmp_path / name, "--arch", "resnet20", "-o", out)
        assert code == 2 and why in text and len(text.strip().splitlines()) == 1, (name, text)
        assert "Traceback" not in text and not out.exists()
    assert not os.path.exists("/tmp/wae-weights-pwned")


def test_a_2gb_file_whose_header_claims_more_than_it_holds(tmp_path):
    """A sparse 2.1 GB file: refused from its header alone, no tensor byte read or allocated."""
    path = _safetensors(tmp_path / "big.safetensors",
                        {f"t{i}": {"dtype": "F32", "shape": [256, 1024, 1024], "data_offsets": [i << 30, (i + 1) << 30]}
                         for i in range(4)})
    with open(path, "r+b") as f:
        f.truncate(int(2.1 * (1 << 30)))
    code, text = _run("convert", path, "--arch", "resnet20", "-o", tmp_path / "c.pt")
    assert code == 2 and "claims 4294967296 bytes of tensors" in text and not (tmp_path / "c.pt").exists()


# ---- torchvision layouts -------------------------------------------------------------------------

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _rand(*shape, fan_in=None):
    return torch.randn(*shape) * math.sqrt(2 / fan_in) if fan_in else torch.randn(*shape) * 0.1


def _bn(sd, prefix, n):
    sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] = 1 + 0.1 * torch.randn(n), 0.1 * torch.randn(n)
    sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"] = 0.1 * torch.randn(n), 0.5 + torch.rand(n)
    sd[f"{prefix}.num_batches_tracked"] = torch.tensor(7)


def torchvision_vgg16(batch_norm: bool) -> dict:
    """torchvision.models.vgg16(_bn)().state_dict()'s keys and shapes, random values."""
    torch.manual_seed(2)
    sd, i, cin = {}, 0, 3
    for v in VGG16_CFG:
        if v == "M":
            i += 1
            continue
        sd[f"features.{i}.weight"], sd[f"features.{i}.bias"] = _rand(v, cin, 3, 3, fan_in=9 * cin), _rand(v)
        if batch_norm:
            _bn(sd, f"features.{i + 1}", v)
        i += 3 if batch_norm else 2
        cin = v
    for j, (o, n) in zip((0, 3, 6), ((4096, 25088), (4096, 4096), (1000, 4096))):
        sd[f"classifier.{j}.weight"], sd[f"classifier.{j}.bias"] = _rand(o, n, fan_in=n), _rand(o)
    return sd


def torchvision_vgg16_forward(sd, x, batch_norm):
    i = 0
    for v in VGG16_CFG:
        if v == "M":
            x, i = F.max_pool2d(x, 2, 2), i + 1
            continue
        x = F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1)
        if batch_norm:
            p = f"features.{i + 1}"
            x = F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                             False, 0.0, 1e-5)
        x, i = F.relu(x), i + (3 if batch_norm else 2)
    x = F.adaptive_avg_pool2d(x, 7).flatten(1)
    x = F.relu(F.linear(x, sd["classifier.0.weight"], sd["classifier.0.bias"]))
    x = F.relu(F.linear(x, sd["classifier.3.weight"], sd["classifier.3.bias"]))
    return F.linear(x, sd["classifier.6.weight"], sd["classifier.6.bias"])


def torchvision_resnet50() -> dict:
    torch.manual_seed(3)
    sd = {"conv1.weight": _rand(64, 3, 7, 7, fan_in=147)}
    _bn(sd, "bn1", 64)
    cin = 64
    for layer, (n, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), 1):
        for j in range(n):
            p = f"layer{layer}.{j}"
            for c, (o, i, k) in enumerate(((w, cin, 1), (w, w, 3), (4 * w, w, 1)), 1):
                sd[f"{p}.conv{c}.weight"] = _rand(o, i, k, k, fan_in=i * k * k) * (0.3 if c == 3 else 1)
                _bn(sd, f"{p}.bn{c}", o)
            if j == 0:
                sd[f"{p}.downsample.0.weight"] = _rand(4 * w, cin, 1, 1, fan_in=cin)
                _bn(sd, f"{p}.downsample.1", 4 * w)
            cin = 4 * w
    sd["fc.weight"], sd["fc.bias"] = _rand(1000, 2048, fan_in=2048), _rand(1000)
    return sd


def torchvision_resnet50_forward(sd, x):
    def bn(x, p):
        return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            False, 0.0, 1e-5)

    x = F.max_pool2d(F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    for layer, n in enumerate((3, 4, 6, 3), 1):
        for j in range(n):
            p, stride = f"layer{layer}.{j}", 2 if j == 0 and layer > 1 else 1
            y = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
            y = F.relu(bn(F.conv2d(y, sd[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2"))
            y = bn(F.conv2d(y, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            x = F.relu(y + x)
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


def _close(got, want):
    rel = float((got - want).abs().max() / want.abs().max())
    assert rel <= 1e-4, rel
    assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.parametrize("batch_norm", [False, True], ids=["vgg16", "vgg16_bn"])
def test_torchvision_vgg16_layouts_give_the_same_logits(batch_norm, tmp_path):
    sd = torchvision_vgg16(batch_norm)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        want = torchvision_vgg16_forward(sd, x, batch_norm)
    (tmp_path / "tv.pth").write_bytes(b"")  # the source file is only hashed: the state is given
    ckpt = weights.foreign_checkpoint(tmp_path / "tv.pth", "vgg16", state=sd)
    assert ckpt.provenance["source_layout"] == f"torchvision-vgg16{'_bn' if batch_norm else ''}"
    _close(_logits(ckpt.build_model(), x), want)


def test_torchvision_resnet50_layout_gives_the_same_logits(tmp_path):
    sd = torchvision_resnet50()
    x = torch.randn(2, 3, 64, 64)  # any size: ResNet-50 pools globally
    with torch.no_grad():
        want = torchvision_resnet50_forward(sd, x)
    (tmp_path / "tv.pth").write_bytes(b"")
    ckpt = weights.foreign_checkpoint(tmp_path / "tv.pth", "resnet50", state=sd, input_size=64)
    _close(_logits(ckpt.build_model(), x), want)
    with pytest.raises(UserError, match="torchvision-resnet50 weights: they load into --arch resnet50"):
        weights.foreign_checkpoint(tmp_path / "tv.pth", "wae-resnet50", state=sd)
