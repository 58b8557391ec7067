"""BatchNorm over the global batch of a CPU (gloo) DDP run.

torch.nn.SyncBatchNorm refuses CPU tensors, and without synchronised statistics two ranks of
16 images normalise differently from one process of 32: the losses of a distributed run would
not match the single-process run they stand for. This layer all-reduces the per-channel sum,
sum of squares and count (differentiably: the backward pass sums the statistics' gradients over
the ranks, as SyncBatchNorm does) and then normalises as BatchNorm2d.
On CUDA, torch's own SyncBatchNorm is used instead (see distributed.sync_batchnorm).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks whose backward is the sum of the gradients over the ranks: each rank's
    statistics feed every rank's loss."""

    @staticmethod
    def forward(ctx, t):
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlooSyncBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 (autocast) in FP32
        # Sums in FP64: the variance as E[x^2] - mean^2 loses digits in FP32 where the mean is large.
        xd = xf.double()
        count = torch.full((1,), xd.numel() // xd.shape[1], dtype=xd.dtype)
        stats = _AllReduceSum.apply(torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)), count]))
        c = xf.shape[1]
        n = stats[-1]
        mean64 = stats[:c] / n
        var = (stats[c:2 * c] / n - mean64 * mean64).clamp(min=0).to(xf.dtype)  # biased, as used for normalising
        mean = mean64.to(xf.dtype)
        if self.track_running_stats:
            self.num_batches_tracked += 1
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * float(n / (n - 1)), momentum)  # unbiased, as BatchNorm keeps
        shape = (1, c, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d of `module` replaced in place by GlooSyncBatchNorm2d (same state_dict keys)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = GlooSyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert(child)
    return module
