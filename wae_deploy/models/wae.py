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

    `std` is the per-channel std of the preprocessing spec: it undoes the normalisation,
    so the PSNR is the familiar one on 8-bit images scaled to [0, 1].
    """
    e_low, e_high = low.double().pow(2).sum(), high.double().pow(2).sum()
    std = torch.as_tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    mse = ((image.double() - recon.double()) * std).pow(2).mean()
    return {"high_energy_share": float(e_high / (e_low + e_high)),
            "psnr_db": float(10 * torch.log10(1 / mse.clamp_min(1e-12)))}
