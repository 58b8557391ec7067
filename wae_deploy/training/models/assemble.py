"""Every model the project trains and deploys, behind one registry and one naming scheme.

    <net>          the plain classifier at full resolution: the baseline for every speed-up
    <net>-resized  the classifier on a 2x box-downsampled image
    <net>-dwt      a fixed 9/7 wavelet in place of the learned split ("Wavelet + CNN")
    wae-<net>      WAE encoder + the unchanged classifier on I_L + a quarter-width branch on
                   I_H + the fusion head; logits = classifier head + fusion head

<net> is one of FAMILIES. The "decomposition without energy loss" ablation is wae-<net>
trained with lambda = 0; "I_L alone" is a trained wae-<net> scored by its classifier head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wae_deploy.core.errors import UserError
from wae_deploy.runtime.preprocess import CAFFE_RAW_BGR, CIFAR, IMAGENET, IMAGENETTE, Preprocessing
from wae_deploy.training.models.resnet import resnet20, resnet50
from wae_deploy.training.models.vgg import VGG, mlp_head
from wae_deploy.training.models.wae import DWT97, WAEDecoder, WAEEncoder

HIGH_BRANCH_WIDTH = 0.25  # the paper's high-frequency branch: the same net at a quarter width


@dataclass(frozen=True)
class Family:
    name: str
    preprocessing: Preprocessing
    num_classes: int
    fusion_hidden: int
    # build(in_channels, input_size, num_classes, width, role) -> net with .features/.head/.out_dim
    build: Callable[..., nn.Module]
    dataset: str = "imagenet-val1300"  # the folder under shared/data a model trains and scores on
    train_size: int | None = None       # train images decoded at this size for random-resized crops


def _vgg16(cin, size, classes, width, role):
    # Plain VGG16 keeps its 4096-wide fc6/fc7; the WAE's classifier head is 1024 wide (prototxt).
    hidden = 4096 if role == "plain" else 1024
    return VGG(cin, size, classes, width=width, hidden=hidden, with_head=role != "high")


def _vgg16_bn(base_width: float, hidden: int):
    # VGG16-BN at a fraction of the paper's width, with a global-pool head: from scratch on
    # 9,469 photos the 4096-wide fc layers only overfit, and BatchNorm makes it train at all.
    def build(cin, size, classes, width, role):
        return VGG(cin, size, classes, width=base_width * width, hidden=hidden, with_head=role != "high",
                   batch_norm=True, global_pool=True)
    return build


IMAGENETTE_WIDTH = 0.375  # the widest VGG16 whose whole family trained within one 3-hour session on 2 cores


def _resnet(builder):
    return lambda cin, size, classes, width, role: builder(cin, classes, width=width, with_head=role != "high")


FAMILIES = {
    "vgg16": Family("vgg16", IMAGENET, 1000, 2048, _vgg16),
    "resnet50": Family("resnet50", IMAGENET, 1000, 1024, _resnet(resnet50)),
    "resnet20": Family("resnet20", CIFAR, 10, 128, _resnet(resnet20), dataset="cifar10"),
    "vgg16-imagenette": Family("vgg16-imagenette", IMAGENETTE, 10, 512, _vgg16_bn(IMAGENETTE_WIDTH, 512),
                               dataset="imagenette-160", train_size=160),
}
KINDS = ("plain", "resized", "dwt", "wae")


def _vgg16_caffe(cin, size, classes, width, role):
    # The authors' Caffe release: pools round up (fc6_CA reads 512x4x4 on 112x112) and a 1024-wide head.
    return VGG(cin, size, classes, width=width, hidden=1024, with_head=role != "high", ceil_mode=True)


# Single models outside the family x kind grid: the exact architecture of one released checkpoint.
# The family is named after the baseline that speed-ups are measured against.
VARIANTS = {
    "wae-vgg16-authors": ("wae", Family("vgg16", CAFFE_RAW_BGR, 1000, 2048, _vgg16_caffe)),
}


class Plain(nn.Module):
    kind = "plain"

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


class Resized(nn.Module):
    kind = "resized"

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(F.avg_pool2d(x, 2))


class Decomposed(nn.Module):
    """A split into (I_L, I_H), the classifier on I_L, a light branch on I_H, and the fusion head.

    The split is the learned WAE encoder (kind "wae", with a training-only decoder) or the
    fixed wavelet (kind "dwt"). `output` selects the score: "sum" (deployed), "main"
    (classifier head alone: the I_L-alone ablation) or "fusion".
    """

    def __init__(self, kind: str, family: Family, input_size: int, num_classes: int):
        super().__init__()
        self.kind = kind
        half = input_size // 2
        self.decomposer = WAEEncoder() if kind == "wae" else DWT97()
        self.decoder = WAEDecoder() if kind == "wae" else None
        # Normalisation only (no affine), where each sub-image enters its branch, as in the prototxt.
        self.norm_low = nn.BatchNorm2d(3, affine=False)
        self.norm_high = nn.BatchNorm2d(self.decomposer.high_channels, affine=False)
        self.main = family.build(3, half, num_classes, 1.0, "main")
        self.high = family.build(self.decomposer.high_channels, half, num_classes, HIGH_BRANCH_WIDTH, "high")
        self.fusion = mlp_head(self.main.out_dim + self.high.out_dim, family.fusion_hidden, num_classes)
        self.output = "sum"

    def decompose(self, x):
        return self.decomposer(x)

    def heads(self, low, high):
        f_main = self.main.features(self.norm_low(low))
        f_high = self.high.features(self.norm_high(high))
        return self.main.head(f_main), self.fusion(torch.cat([f_main, f_high], 1))

    def forward(self, x):
        main, fusion = self.heads(*self.decompose(x))
        if self.output == "main":
            return main
        if self.output == "fusion":
            return fusion
        return main + fusion


def parse_arch(arch: str) -> tuple[str, Family]:
    """'wae-resnet20' -> ('wae', FAMILIES['resnet20']); unknown names raise UserError."""
    if arch in VARIANTS:
        return VARIANTS[arch]
    name, kind = arch, "plain"
    if name.startswith("wae-"):
        name, kind = name[4:], "wae"
    elif name.endswith("-resized"):
        name, kind = name[: -len("-resized")], "resized"
    elif name.endswith("-dwt"):
        name, kind = name[: -len("-dwt")], "dwt"
    if name not in FAMILIES:
        raise UserError(f"unknown architecture {arch!r}; known: {', '.join(list_archs() + list(VARIANTS))}")
    return kind, FAMILIES[name]


def list_archs() -> list[str]:
    return [a for f in FAMILIES for a in (f, f"{f}-resized", f"{f}-dwt", f"wae-{f}")]


def create_model(arch: str, num_classes: int | None = None, input_size: int | None = None) -> nn.Module:
    kind, family = parse_arch(arch)
    classes = num_classes or family.num_classes
    size = input_size or family.preprocessing.crop
    if size % 2:
        raise UserError(f"input size must be even for a 2x split, got {size}")
    if kind == "plain":
        return Plain(family.build(3, size, classes, 1.0, "plain"))
    if kind == "resized":
        return Resized(family.build(3, size // 2, classes, 1.0, "plain"))
    return Decomposed(kind, family, size, classes)


def default_preprocessing(arch: str) -> Preprocessing:
    return parse_arch(arch)[1].preprocessing
