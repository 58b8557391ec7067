"""ResNets: ResNet-50 (ImageNet, bottleneck) and ResNet-20 (CIFAR, basic blocks), with a width factor."""

from __future__ import annotations

from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
        )
        self.shortcut = _shortcut(cin, width, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        out = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out),
        )
        self.shortcut = _shortcut(cin, out, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """`features` maps an image to a flat globally-pooled vector; `head` is the fc layer."""

    def __init__(self, block, stage_blocks, stage_widths, stem: nn.Module, stem_out: int,
                 num_classes: int, with_head: bool = True):
        super().__init__()
        layers, c = [stem], stem_out
        for i, (n, w) in enumerate(zip(stage_blocks, stage_widths)):
            for j in range(n):
                stride = 2 if (j == 0 and i > 0) else 1
                layers.append(block(c, w, stride))
                c = w * block.expansion
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = c
        self.head = nn.Linear(c, num_classes) if with_head else None

    def forward(self, x):
        return self.head(self.features(x))


def resnet50(in_channels: int, num_classes: int, width: float = 1.0, with_head: bool = True) -> ResNet:
    base = int(64 * width)
    stem = nn.Sequential(
        nn.Conv2d(in_channels, base, 7, 2, 3, bias=False), nn.BatchNorm2d(base), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    )
    widths = [int(w * width) for w in (64, 128, 256, 512)]
    return ResNet(Bottleneck, [3, 4, 6, 3], widths, stem, base, num_classes, with_head)


def resnet20(in_channels: int, num_classes: int, width: float = 1.0, with_head: bool = True) -> ResNet:
    widths = [max(1, int(w * width)) for w in (16, 32, 64)]
    stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                         nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
    return ResNet(BasicBlock, [3, 3, 3], widths, stem, widths[0], num_classes, with_head)
