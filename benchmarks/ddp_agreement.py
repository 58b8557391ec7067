"""Per-step losses of 2 gloo ranks against 1 process, and of 1 process against itself on 2 threads.

    .venv/bin/python benchmarks/ddp_agreement.py one two,world=2,sync_bn=True one2t,threads=2
    .venv/bin/python benchmarks/ddp_agreement.py one128,batch_size=128 two128,world=2,sync_bn=True,batch_size=128 \\
        one128t2,threads=2,batch_size=128
    FP64=1 .venv/bin/python benchmarks/ddp_agreement.py one64 two64,world=2,sync_bn=True

Each argument is a run: a name, then TrainConfig changes (world: ranks, spawned here with gloo;
threads: torch threads per process). ResNet-20 on CIFAR-10, 20 steps of batch 32 (or as given),
lr 0.05, --amp off. Prints each run's largest |loss difference| per step against the first run.
FP64=1 runs everything in float64 (a diagnostic: rounding 1e9 times smaller), which no user option does.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import torch
import torch.multiprocessing as mp

from wae_deploy.runtime.data import default_data_root
from wae_deploy.training.train import TrainConfig, train

if os.environ.get("FP64"):
    torch.set_default_dtype(torch.float64)
    from wae_deploy.training import train as _train_module
    _normalize = _train_module.Normalizer.__call__
    _train_module.Normalizer.__call__ = lambda self, b: _normalize(self, b).double()


def config(out: str, **kw) -> TrainConfig:
    base = dict(arch="resnet20", epochs=1, batch_size=32, limit_batches=20, limit_eval=20, eval_every=10,
                amp="off", lr=0.05, device="cpu", data=str(default_data_root()))
    return TrainConfig(out=out, step_log=out + ".steps", **{**base, **kw})


def _rank(rank: int, world: int, cfg: TrainConfig, threads: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT="29533")
    torch.set_num_threads(threads)
    train(cfg, log=lambda _: None)


def run(tmp: str, name: str, world: int = 1, threads: int = 1, **kw) -> list[float]:
    cfg = config(f"{tmp}/{name}.pt", **kw)
    t = time.perf_counter()
    if world == 1:
        torch.set_num_threads(threads)
        train(cfg, log=lambda _: None)
    else:
        mp.spawn(_rank, (world, cfg, threads), nprocs=world)
    print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
    with open(cfg.step_log) as f:
        return [json.loads(line)["loss"] for line in f]


def main() -> None:
    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in sys.argv[1:]:
            name, *changes = spec.split(",")
            losses[name] = run(tmp, name, **{k: eval(v) for k, v in (c.split("=") for c in changes)})  # noqa: S307
    first, *others = losses
    for name in others:
        print(name, "|d| per step:", " ".join(f"{abs(a - b):.1e}" for a, b in zip(losses[first], losses[name])))
    print(first, "losses:", " ".join(f"{v:.4f}" for v in losses[first]))


if __name__ == "__main__":
    main()
