"""VGG16 as in Simonyan & Zisserman, with a width factor for the WAE's quarter-width branch.

`batch_norm` and `global_pool` give the VGG16-BN variant with a global-average-pool head
that trains from scratch on a small data set (the Imagenette reference models). `ceil_mode`
rounds pooled sizes up as Caffe does (the authors' released WAE-VGG16: pool5 is 4x4 on 112).
"""

from __future__ import annotations

from torch import nn

from wae_deploy.core.errors import UserError

VGG16_STAGES = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]


class VGG(nn.Module):
    """`features` maps an image to a flat pool5 vector; `head` maps that to logits."""

    def __init__(self, in_channels: int, input_size: int, num_classes: int, width: float = 1.0,
                 hidden: int = 4096, with_head: bool = True, batch_norm: bool = False, global_pool: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        layers, c, side = [], in_channels, input_size
        for out, repeats in VGG16_STAGES:
            out = max(1, int(out * width))
            for _ in range(repeats):
                layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU(inplace=True))
                c = out
            layers.append(nn.MaxPool2d(2, ceil_mode=ceil_mode))
            side = -(-side // 2) if ceil_mode else side // 2
        if side < 1:
            raise UserError(f"VGG16 needs an input of at least 32 pixels, got {input_size}")
        if global_pool:
            layers.append(nn.AdaptiveAvgPool2d(1))
            side = 1
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = c * side * side
        self.head = mlp_head(self.out_dim, hidden, num_classes) if with_head else None

    def forward(self, x):
        return self.head(self.features(x))


def conv_indices(batch_norm: bool = False) -> list[int]:
    """Position of each convolution in `features` (the same in torchvision's VGG16 layouts)."""
    indices, i = [], 0
    for _, repeats in VGG16_STAGES:
        for _ in range(repeats):
            indices.append(i)
            i += 3 if batch_norm else 2  # conv, [bn,] relu
        i += 1  # max-pool
    return indices


def mlp_head(in_dim: int, hidden: int, num_classes: int) -> nn.Sequential:
    """fc-ReLU-dropout twice, then the classifier: VGG's fc6/fc7/fc8 and the WAE fusion head."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )
