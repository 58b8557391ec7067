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
import glob
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from wae_deploy.core.errors import UserError

T = TypeVar("T")
# Exit statuses of ranks that did not cause a failure: one stopped by the launcher (SIGTERM, after
# another rank failed), one whose collective failed because a peer was gone. The launcher reports
# the rank that failed for another reason.
STOPPED, PEER_LOST = 143, 75


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
    signal.signal(signal.SIGTERM, _stopped)  # unwind (removing partial files) when the launcher ends this rank
    return Context(dev, rank, world)


def _stopped(signum, frame):
    raise SystemExit(STOPPED)


def peer_lost(e: Exception, ctx: Context) -> UserError:
    return UserError(f"rank {ctx.rank}: a collective failed, another rank is gone ({type(e).__name__})",
                     exit_code=PEER_LOST)


def from_main(make: Callable[[], T], ctx: Context) -> T:
    """`make()` on rank 0, its result (or its UserError) on every rank: all ranks start from what
    rank 0 read, and a bad input fails them all alike instead of leaving some waiting."""
    if ctx.world == 1:
        return make()
    box: list = [None]
    if ctx.main:
        try:
            box[0] = ("ok", make())
        except UserError as e:
            box[0] = ("error", str(e), e.exit_code)
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "error":
        raise UserError(box[0][1], exit_code=box[0][2])
    return box[0][1]


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
    from wae_deploy.training import sync_bn
    return sync_bn.convert(model)


def wrap(module: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """DDP around `module` when there are several ranks (built per stage: DDP registers the
    parameters that require gradients when it is made, and each stage trains other ones)."""
    if ctx.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def without_nproc(args: list[str]) -> list[str]:
    """The command line for every rank: this one less --nproc (each rank is one process)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(nproc: int, argv: list[str]) -> None:
    """Run `python -m wae_deploy <argv>` on `nproc` local ranks through torch.distributed.run
    (torchrun --standalone). The ranks' stderr goes to files: after a success rank 0's is shown;
    after a failure, one line from the rank that failed first (torchrun stops the others)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    for name in list(logging.root.manager.loggerDict):  # torchrun's own warnings and failure boxes
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="wae-deploy-ranks-") as logs:
        args = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(nproc), "--log-dir", logs,
                                             "--redirects", "2", "--module", "wae_deploy", *argv])
        try:
            run(args)
        except ChildFailedError as e:
            rank, failure = min(e.failures.items(), key=lambda kv: (_blame(kv[1].exitcode), kv[1].timestamp, kv[0]))
            said = [line for line in _stderr(logs, rank).splitlines() if line.startswith("error: ")]
            if said:
                # Bad input fails every rank alike; which rank's exit torchrun saw first is a race.
                bad_input = any(f.exitcode == 2 for f in e.failures.values()) and _blame(failure.exitcode) > 0
                raise UserError(f"rank {rank}: {said[-1][len('error: '):]}", exit_code=2 if bad_input else 1) from e
            how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
                   else f"exited with {failure.exitcode}")
            raise UserError(f"distributed training failed: rank {rank} {how}; the other ranks were stopped "
                            "(--resume continues from the last finished epoch)", exit_code=1) from e
        sys.stderr.write(_stderr(logs, 0))


def _blame(exitcode: int) -> int:
    """Which failed rank caused the failure, lowest first: killed from outside (a signal other than the
    launcher's SIGTERM), then bad input, then other errors, then ranks that only saw a peer go (their
    own collective errors race with the launcher noticing the dead rank)."""
    if exitcode < 0 and exitcode != -signal.SIGTERM:
        return 0
    if exitcode == 2:
        return 1
    if exitcode in (STOPPED, PEER_LOST) or exitcode == -signal.SIGTERM:
        return 3
    return 2


def _stderr(logs: str, rank: int) -> str:
    """What local rank `rank` wrote to stderr (torchrun's layout: <run>/attempt_<n>/<rank>/stderr.log)."""
    paths = sorted(glob.glob(os.path.join(logs, "*", "attempt_*", str(rank), "stderr.log")))
    try:
        with open(paths[-1], errors="replace") as f:
            return f.read()
    except (IndexError, OSError):
        return ""
