"""One training process or several: the device, rank and world of a run, and what DDP needs of them.

torchrun (or `wae-deploy train --nproc N`, which runs torch.distributed.run) sets RANK,
WORLD_SIZE and LOCAL_RANK; without them a run is a single process and nothing here
communicates. Backends: gloo on CPU, nccl on CUDA.

Sharding: every rank draws the same permutation of the training set (same seed) and takes
its contiguous slice of each global batch (torch.tensor_split), the in-memory equivalent of
a DistributedSampler. The global batch, the number of steps and the learning-rate schedule
are those of one process; see train.py for how the losses are weighted to match it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass(frozen=True)
class Context:
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates, logs and writes files."""
        return self.rank == 0


def resolve_device(name: str) -> str:
    """'cpu' or 'cuda' for --device cpu|cuda|auto; CUDA asked for but absent is a user error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        why = "this torch is a CPU build" if torch.version.cuda is None else "no CUDA device is visible"
        raise UserError(f"--device cuda: CUDA is not available ({why}); use --device cpu")
    return name


def check_nproc(nproc: int, device: str) -> None:
    if nproc < 1:
        raise UserError("--nproc must be at least 1")
    if device == "cuda" and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {nproc} is more than the {torch.cuda.device_count()} CUDA devices here")


def setup(device: str, timeout_s: float = 1800) -> Context:
    """Join the process group when launched by torchrun; a single process otherwise.

    `timeout_s` bounds every collective: a rank that hangs fails the run rather than stalling it.
    """
    kind = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context(torch.device(kind))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(f"local rank {local} has no CUDA device ({torch.cuda.device_count()} here); "
                            "lower --nproc-per-node")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    dist.init_process_group("nccl" if kind == "cuda" else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s))
    return Context(dev, rank, world)


def teardown(ctx: Context) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def shard(idx: torch.Tensor, ctx: Context) -> tuple[int, torch.Tensor]:
    """This rank's contiguous slice of a global batch of indices, and where it starts in the batch."""
    parts = torch.tensor_split(idx, ctx.world)
    return sum(len(p) for p in parts[:ctx.rank]), parts[ctx.rank]


def sum_over_ranks(values: list[float], ctx: Context) -> list[float]:
    if ctx.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def sync_batchnorm(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """BatchNorm statistics over the global batch: torch's SyncBatchNorm on CUDA, which refuses CPU
    tensors, and sync_bn.GlooSyncBatchNorm2d on CPU."""
    if ctx.device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from . import sync_bn
    return sync_bn.convert(model)


def wrap(module: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """DDP around `module` when there are several ranks (built per stage: DDP registers the
    parameters that require gradients when it is made, and each stage trains other ones)."""
    if ctx.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def launch(nproc: int, argv: list[str]) -> None:
    """Run `python -m wae_deploy <argv>` on `nproc` local ranks through torch.distributed.run
    (torchrun --standalone); a rank that fails ends the others and the run."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(nproc),
                                         "--module", "wae_deploy", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        failures = e.failures
        rank = min(failures)
        code = failures[rank].exitcode
        raise UserError(f"distributed training failed: rank {rank} exited with {code} "
                        f"({len(failures)} of {nproc} ranks failed; see its error above)",
                        exit_code=2 if code == 2 else 1) from e
