"""The CPU SyncBatchNorm on two gloo ranks against BatchNorm2d on the whole batch: outputs, input
gradients, parameter gradients (summed over the ranks, as DDP's all-reduce does) and running stats."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wae_deploy.training.sync_bn import GlooSyncBatchNorm2d

SPLIT = (3, 5)  # uneven slices: the ranks' statistics must be weighted by their counts


def _batch():
    g = torch.Generator().manual_seed(0)
    # A large mean beside a small spread: where E[x^2] - mean^2 would lose the variance in FP32.
    x = torch.randn(sum(SPLIT), 4, 6, 5, generator=g, dtype=torch.float32) * 0.1 + 50.0
    return x, torch.randn(x.shape, generator=g)


def _layer(cls):
    torch.manual_seed(1)
    layer = cls(4)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.uniform_(-1.0, 1.0)
    return layer.train()


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        x, probe = _batch()
        start = sum(SPLIT[:rank])
        xs = x[start:start + SPLIT[rank]].clone().requires_grad_()
        layer = _layer(GlooSyncBatchNorm2d)
        y = layer(xs)
        (y * probe[start:start + SPLIT[rank]]).sum().backward()
        torch.save({"y": y.detach(), "grad_x": xs.grad, "grad_w": layer.weight.grad, "grad_b": layer.bias.grad,
                    "running_mean": layer.running_mean, "running_var": layer.running_var}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_compute_what_batchnorm_computes_on_the_whole_batch(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    ranks = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    x, probe = _batch()
    x.requires_grad_()
    layer = _layer(torch.nn.BatchNorm2d)
    y = layer(x)
    (y * probe).sum().backward()
    close = dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach(), **close)
    torch.testing.assert_close(torch.cat([r["grad_x"] for r in ranks]), x.grad, **close)
    torch.testing.assert_close(ranks[0]["grad_w"] + ranks[1]["grad_w"], layer.weight.grad, **close)
    torch.testing.assert_close(ranks[0]["grad_b"] + ranks[1]["grad_b"], layer.bias.grad, **close)
    for r in ranks:
        torch.testing.assert_close(r["running_mean"], layer.running_mean, **close)
        torch.testing.assert_close(r["running_var"], layer.running_var, **close)
