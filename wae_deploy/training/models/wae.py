"""The Wavelet-like Auto-Encoder of Chen et al. (AAAI 2018) and the fixed-wavelet stand-in.

Layer shapes follow the authors' prototxt (see ../shared/docs/wae-paper.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WAEEncoder(nn.Module):
    """F_E: three conv3x3(16)+ReLU, then two parallel stride-2 conv3x3 heads to I_L and I_H."""

    high_channels = 3

    def __init__(self, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.low = nn.Conv2d(width, 3, 3, stride=2, padding=1)
        self.high = nn.Conv2d(width, 3, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.low(h), self.high(h)


def _decoder_branch(width: int) -> nn.Sequential:
    # The paper shows no activations inside the decoder; ReLU after the inner layers and
    # none on the output is our reading (the output must reach negative normalised pixels).
    return nn.Sequential(
        nn.ConvTranspose2d(3, width, 4, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, 3, 3, padding=1),
    )


class WAEDecoder(nn.Module):
    """I' = F_DL(I_L) + F_DH(I_H). Used in training only; never exported."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.from_low = _decoder_branch(width)
        self.from_high = _decoder_branch(width)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.from_low(low) + self.from_high(high)


# Signs of the three Haar detail bands over a 2x2 block [row a][column b]: rows, columns, diagonal.
_HAAR_SIGNS = torch.tensor([[[1., 1.], [-1., -1.]], [[1., -1.], [1., -1.]], [[1., -1.], [-1., 1.]]])


@torch.no_grad()
def init_haar(encoder: WAEEncoder, decoder: WAEDecoder) -> None:
    """Start the WAE from a one-level Haar split, as close to lossless as 3 + 3 channels allow.

    I_L = the 2x2 block mean of each colour; I_H = the three Haar detail bands of the
    colour-mean (luminance-like) image; the decoder inverts that exactly, so only the
    chroma detail inside each 2x2 block is lost (42 dB PSNR on CIFAR-10, whose JPEGs keep
    little chroma detail). From a random start the WAE settles far from this (29 dB) with an
    I_H that is not edge-like; the paper does not say how it initialised.
    Signals pass the ReLUs as +x / -x channel pairs (channels 0-5); the other channels keep
    their random weights but start disconnected from the output, so training can use them.
    """
    def pass_pairs(conv: nn.Conv2d) -> None:
        conv.weight[:6] = 0
        conv.bias[:6] = 0
        for ch in range(6):
            conv.weight[ch, ch, 1, 1] = 1

    first, second, third = encoder.body[0], encoder.body[2], encoder.body[4]
    first.weight[:6] = 0
    first.bias[:6] = 0
    for c in range(3):
        first.weight[c, c, 1, 1], first.weight[3 + c, c, 1, 1] = 1, -1
    pass_pairs(second)
    pass_pairs(third)
    # Stride-2 3x3 heads centred on (2i, 2j): taps 1..2 cover the block (2i..2i+1, 2j..2j+1).
    for head in (encoder.low, encoder.high):
        head.weight.zero_()
        head.bias.zero_()
    for c in range(3):
        encoder.low.weight[c, c, 1:, 1:], encoder.low.weight[c, 3 + c, 1:, 1:] = 0.25, -0.25
        for t in range(3):
            band = _HAAR_SIGNS[t] / 12  # / 4 pixels / 3 colours
            encoder.high.weight[t, c, 1:, 1:], encoder.high.weight[t, 3 + c, 1:, 1:] = band, -band

    # Decoder: the stride-2 4x4 deconvolution writes input (i, j) to (2i + a, 2j + b) with tap (1 + a, 1 + b).
    for branch, patterns in ((decoder.from_low, [torch.ones(2, 2)] * 3), (decoder.from_high, list(_HAAR_SIGNS))):
        up, inner1, inner2, out = branch[0], branch[2], branch[4], branch[6]
        up.weight[:, :6] = 0
        up.bias[:6] = 0
        for k in range(3):
            up.weight[k, k, 1:3, 1:3], up.weight[k, 3 + k, 1:3, 1:3] = patterns[k], -patterns[k]
        pass_pairs(inner1)
        pass_pairs(inner2)
        out.weight.zero_()
        out.bias.zero_()
        for c in range(3):
            for k in range(3):
                # Low branch: colour c from I_L channel c; high branch: every colour gets all three bands.
                if branch is decoder.from_high or k == c:
                    out.weight[c, k, 1, 1], out.weight[c, 3 + k, 1, 1] = 1, -1


# CDF 9/7 analysis filters (JPEG 2000 irreversible transform), centred on tap 4.
_CDF97_LOW = [0.026748757411, -0.016864118443, -0.078223266529, 0.266864118443, 0.602949018236,
              0.266864118443, -0.078223266529, -0.016864118443, 0.026748757411]
_CDF97_HIGH = [0.0, 0.091271763114, -0.057543526229, -0.591271763114, 1.115087052457,
               -0.591271763114, -0.057543526229, 0.091271763114, 0.0]


class DWT97(nn.Module):
    """One level of the separable 9/7 wavelet as a fixed stride-2 convolution.

    Outputs cA (3 channels, the low-frequency image) and cH, cV, cD stacked (9 channels):
    the paper's "Wavelet + CNN" baseline. No parameters are learned.
    """

    high_channels = 9

    def __init__(self):
        super().__init__()
        lo, hi = torch.tensor(_CDF97_LOW), torch.tensor(_CDF97_HIGH)
        bands = [torch.outer(lo, lo), torch.outer(hi, lo), torch.outer(lo, hi), torch.outer(hi, hi)]
        # weight[c * 4 + b] filters colour channel c with band b (grouped conv, groups=3).
        weight = torch.stack([bands[b] for _ in range(3) for b in range(4)]).unsqueeze(1)
        self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Odd-phase sampling (offset 1) keeps the high-pass taps aligned with the odd samples.
        x = F.pad(x, (4, 3, 4, 3), mode="reflect")
        y = F.conv2d(x, self.weight, stride=2, groups=3)  # N x 12 x H/2 x W/2
        n, _, h, w = y.shape
        y = y.view(n, 3, 4, h, w)
        low = y[:, :, 0]
        high = y[:, :, 1:].reshape(n, 9, h, w)
        return low, high


def reconstruction_loss(image: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """l_r = ||I - I'||^2, summed over pixels and averaged over the batch (as in the paper)."""
    return (image - recon).pow(2).flatten(1).sum(1).mean()


def energy_loss(high: torch.Tensor) -> torch.Tensor:
    """l_e = ||I_H||^2, summed over pixels and averaged over the batch."""
    return high.pow(2).flatten(1).sum(1).mean()


def wae_loss(image, recon, high, lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_t = l_r + lambda * l_e; returns (L_t, l_r, l_e)."""
    lr, le = reconstruction_loss(image, recon), energy_loss(high)
    return lr + lam * le, lr, le


def decomposition_stats(image, low, high, recon, std) -> dict:
    """Share of the energy in I_H and reconstruction PSNR in [0, 1] pixel units.

    `std` is the preprocessing spec's `unit_std`: it undoes the normalisation (whatever the
    spec's pixel scale), so the PSNR is the familiar one on 8-bit images scaled to [0, 1].
    """
    e_low, e_high = low.double().pow(2).sum(), high.double().pow(2).sum()
    std = torch.as_tensor(std, dtype=torch.float64, device=image.device).view(1, -1, 1, 1)
    mse = ((image.double() - recon.double()) * std).pow(2).mean()
    return {"high_energy_share": float(e_high / (e_low + e_high)),
            "psnr_db": float(10 * torch.log10(1 / mse.clamp_min(1e-12)))}


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1) - a.flatten(1).mean(1, keepdim=True), b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def edge_correlation(image: torch.Tensor, high: torch.Tensor) -> dict[str, torch.Tensor]:
    """How edge-like I_H is: per image, the correlation of |I_H - mean| (over channels) with

    - "gradient": the gradient magnitude (central differences) of the 2x2-averaged image;
    - "lost_detail": the detail that 2x2 averaging loses, what a lossless split must keep in I_H.
    On CIFAR-10 the 9/7 wavelet's high bands score 0.35 / 0.60 and a Haar split 0.60 / 0.99;
    noise scores 0.
    """
    image, high = image.double(), high.double()
    half = F.avg_pool2d(image, 2)
    gx, gy = torch.zeros_like(half), torch.zeros_like(half)
    gx[..., :, 1:-1] = half[..., :, 2:] - half[..., :, :-2]
    gy[..., 1:-1, :] = half[..., 2:, :] - half[..., :-2, :]
    gradient = (gx ** 2 + gy ** 2).sum(1).sqrt()
    detail = image - F.interpolate(half, scale_factor=2, mode="nearest")
    lost = F.avg_pool2d(detail.pow(2).sum(1, keepdim=True).sqrt(), 2)
    magnitude = (high - high.mean((2, 3), keepdim=True)).pow(2).sum(1).sqrt()
    return {"gradient": _pearson(magnitude, gradient), "lost_detail": _pearson(magnitude, lost[:, 0])}
