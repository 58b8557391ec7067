"""torchvision's state-dict layouts -> this project's: vgg16, vgg16_bn (folded) and resnet50.

The networks compute the same function; only the names differ (and vgg16_bn's BatchNorms):
- vgg16: `features.N` and `classifier.N` are `net.features.N` and `net.head.N` (same indices:
  both are conv, ReLU, ..., max-pool sequences; torchvision's 7x7 adaptive pool is the
  identity on a 224 input, where pool5 is already 7x7).
- vgg16_bn: the project has no full-width VGG16 with BatchNorm, so each eval-mode BatchNorm
  is folded into the convolution before it (w * g / sqrt(var + eps), (b - mean) * g / sqrt(var
  + eps) + beta): the same logits from the plain `vgg16`, and a graph without the BN nodes.
- resnet50 (v1.5: stride on the 3x3 convolution, as here): `conv1`/`bn1` are the stem
  `net.features.0.{0,1}`, `layerL.j` is block `net.features.<1 + blocks before>`, its
  conv/bn 1-3 are `body.{0,1,3,4,6,7}`, `downsample` is `shortcut`, `fc` is `net.head`.
"""

from __future__ import annotations

import re

import torch

from wae_deploy.core.errors import UserError
from wae_deploy.training.models.vgg import conv_indices

BN_EPS = 1e-5  # torchvision's BatchNorm2d default
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
RESNET50_BLOCKS = (3, 4, 6, 3)
TARGETS = {"torchvision-vgg16": ("vgg16", "vgg16-resized"), "torchvision-vgg16_bn": ("vgg16", "vgg16-resized"),
           "torchvision-resnet50": ("resnet50", "resnet50-resized")}


def detect(state: dict) -> str:
    """The layout's name: one of TARGETS, or "wae-deploy" (the project's own keys, or anything else)."""
    if "features.0.weight" in state and "classifier.0.weight" in state:
        return "torchvision-vgg16_bn" if "features.1.running_mean" in state else "torchvision-vgg16"
    if {"conv1.weight", "layer1.0.conv1.weight", "fc.weight"} <= set(state):
        return "torchvision-resnet50"
    return "wae-deploy"


def to_project(state: dict, arch: str) -> tuple[dict, str]:
    """`state` in the project's layout for `arch`, and the name of the layout it came in."""
    layout = detect(state)
    if layout == "wae-deploy":
        return state, layout
    if arch not in TARGETS[layout]:
        raise UserError(f"these are {layout} weights: they load into --arch {TARGETS[layout][0]}, not {arch}")
    if layout == "torchvision-vgg16":
        return {_vgg_name(k): v for k, v in state.items()}, layout
    if layout == "torchvision-vgg16_bn":
        return _fold_vgg_bn(state), layout
    return {_resnet_name(k): v for k, v in state.items()}, layout


def _vgg_name(key: str) -> str:
    return re.sub(r"^features\.", "net.features.", re.sub(r"^classifier\.", "net.head.", key))


def _fold_vgg_bn(state: dict) -> dict:
    out = {_vgg_name(k): v for k, v in state.items() if k.startswith("classifier.")}
    for src, dst in zip(conv_indices(True), conv_indices(False)):
        try:
            w, b = state[f"features.{src}.weight"], state[f"features.{src}.bias"]
            g, beta, mean, var = (state[f"features.{src + 1}.{k}"] for k in BN_KEYS[:4])
        except KeyError as e:
            raise UserError(f"torchvision vgg16_bn weights lack {e.args[0]}") from e
        if not all(t.is_floating_point() for t in (w, b, g, beta, mean, var)):
            raise UserError(f"torchvision vgg16_bn weights: features.{src} holds integer values")
        scale = g.double() / torch.sqrt(var.double() + BN_EPS)
        out[f"net.features.{dst}.weight"] = (w.double() * scale.view(-1, 1, 1, 1)).float()
        out[f"net.features.{dst}.bias"] = ((b.double() - mean.double()) * scale + beta.double()).float()
    used = {f"features.{i}.weight" for i in conv_indices(True)} | {f"features.{i}.bias" for i in
                                                                          conv_indices(True)}
    used |= {f"features.{i + 1}.{k}" for i in conv_indices(True) for k in BN_KEYS}
    out.update({k: v for k, v in state.items() if k.startswith("features.") and k not in used})  # fit() names them
    return out


_RESNET_BODY = {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4", "conv3": "6", "bn3": "7"}


def _resnet_name(key: str) -> str:
    m = re.match(r"^(conv1|bn1)\.(.+)$", key)
    if m:
        return f"net.features.0.{'0' if m[1] == 'conv1' else '1'}.{m[2]}"
    if key.startswith("fc."):
        return "net.head." + key[3:]
    m = re.match(r"^layer([1-4])\.(\d+)\.(conv[123]|bn[123]|downsample\.[01])\.(.+)$", key)
    if not m or int(m[2]) >= RESNET50_BLOCKS[int(m[1]) - 1]:
        return key  # left as it is: fit() reports it as unexpected
    block = 1 + sum(RESNET50_BLOCKS[: int(m[1]) - 1]) + int(m[2])
    part = f"shortcut.{m[3][-1]}" if m[3].startswith("downsample") else f"body.{_RESNET_BODY[m[3]]}"
    return f"net.features.{block}.{part}.{m[4]}"
