"""BatchNorm over the global batch of a CPU (gloo) DDP run.

torch.nn.SyncBatchNorm refuses CPU tensors, and without synchronised statistics two ranks of
16 images normalise differently from one process of 32: the losses of a distributed run would
not match the single-process run they stand for. This layer gathers every rank's per-channel
count, mean and variance (differentiably: the backward pass sums the statistics' gradients over
the ranks, as SyncBatchNorm does), combines them and then normalises as BatchNorm2d.
On CUDA, torch's own SyncBatchNorm is used instead (see distributed.sync_batchnorm).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllGather(torch.autograd.Function):
    """Every rank's row, stacked in rank order. Each rank's statistics feed every rank's loss, so the
    backward sums each row's gradient over the ranks and hands this rank the sum for its own row."""

    @staticmethod
    def forward(ctx, row):
        rows = [torch.empty_like(row) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, row.contiguous())
        return torch.stack(rows)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


class GlooSyncBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 (autocast) in FP32
        c = xf.shape[1]
        # Each rank's own mean and variance (one fused pass, accurate in FP32), then the global ones from
        # all ranks' (count, mean, variance) in FP64: no E[x^2] - mean^2 cancellation anywhere.
        var_i, mean_i = torch.var_mean(xf, dim=(0, 2, 3), unbiased=False)
        n_i = mean_i.new_full((1,), xf.numel() // c)
        rows = _AllGather.apply(torch.cat([mean_i, var_i, n_i]).double())
        means, variances, counts = rows[:, :c], rows[:, c:2 * c], rows[:, 2 * c:]
        n = counts.sum()
        mean64 = (counts * means).sum(0) / n
        var = ((counts * (variances + (means - mean64) ** 2)).sum(0) / n).to(xf.dtype)  # biased, for normalising
        mean = mean64.to(xf.dtype)
        if self.track_running_stats:
            self.num_batches_tracked += 1
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * float(n / (n - 1)), momentum)  # unbiased, as BatchNorm keeps
        # Centred before scaling: x * scale + shift would cancel large terms when the mean is large.
        scale, shape = torch.rsqrt(var + self.eps), (1, c, 1, 1)
        centred = xf - mean.view(shape)
        if not self.affine:
            return (centred * scale.view(shape)).to(x.dtype)
        return torch.addcmul(self.bias.view(shape), centred, (scale * self.weight).view(shape)).to(x.dtype)


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
