"""Multiply-add and parameter counts per branch, measured by running the model once.

Counts convolutions, transposed convolutions and fully connected layers (the usual
convention; the paper's FLOPs are multiply-adds). The training-only decoder is not run
at inference and is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wae_deploy.training.models.assemble import create_model, parse_arch
from wae_deploy.training.models.wae import DWT97

# Module-name prefix -> branch; a plain or resized model is all "main".
BRANCHES = {"decomposer": "encoder", "main": "main", "net": "main", "high": "high", "fusion": "fusion"}


@dataclass
class Counts:
    macs: dict[str, int]
    params: dict[str, int]

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())

    @property
    def total_params(self) -> int:
        return sum(self.params.values())


def _layer_macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        return out.numel() * k
    if isinstance(m, nn.ConvTranspose2d):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.out_channels // m.groups)
        return inp.numel() * k
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    if isinstance(m, DWT97):  # a fixed 9x9 filter per band and colour channel
        low, high = out
        return (low.numel() + high.numel()) * m.weight.shape[-1] * m.weight.shape[-2]
    return 0


def count(model: nn.Module, input_size: int) -> Counts:
    """MACs for one image of input_size x input_size, and parameters, per branch."""
    macs = {b: 0 for b in ("encoder", "main", "high", "fusion")}
    params = dict(macs)
    hooks = []
    for name, m in model.named_modules():
        branch = BRANCHES.get(name.split(".")[0])
        if branch is None or not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, DWT97)):
            continue
        params[branch] += sum(p.numel() for p in m.parameters())

        def hook(mod, args, out, branch=branch):
            macs[branch] += _layer_macs(mod, args[0], out)

        hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return Counts({k: v for k, v in macs.items() if v}, {k: v for k, v in params.items() if v})


def baseline_of(arch: str) -> str:
    """The full-resolution plain classifier every speed-up is measured against."""
    return parse_arch(arch)[1].name


def theoretical_speedup(arch: str, input_size: int | None = None) -> float:
    """MACs of the full-resolution baseline over MACs of `arch`."""
    model = create_model(arch, input_size=input_size)
    size = input_size or parse_arch(arch)[1].preprocessing.crop
    base = create_model(baseline_of(arch), input_size=size)
    return count(base, size).total_macs / count(model, size).total_macs
