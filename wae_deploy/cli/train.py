"""`wae-deploy train`."""

from __future__ import annotations

import os
import sys

import click

from wae_deploy.cli.options import command_line


@click.command()
@click.option("--arch", required=True, help="e.g. wae-vgg16-imagenette, vgg16-imagenette, wae-resnet20, "
              "resnet20-resized, resnet20-dwt (wae-deploy flops --list names them all).")
@click.option("--data", type=click.Path(),
              help="Data root [default: $WAE_DATA, the model's data set under ../shared/data, or a download].")
@click.option("-o", "--out", type=click.Path(), help="Checkpoint path [default: ./<arch>.pt].")
@click.option("--epochs", default=20, show_default=True, help="Classifier + joint epochs.")
@click.option("--wae-epochs", default=3, show_default=True, help="Stage 1: WAE alone (WAE models only).")
@click.option("--joint-epochs", type=int, help="Stage 3: joint fine-tuning [default: a quarter of --epochs].")
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=0.2, show_default=True, help="Peak learning rate (one-cycle).")
@click.option("--lambda", "lambda_energy", default=1.0, show_default=True,
              help="Weight of the energy loss on I_H; 0 is the paper's no-energy ablation.")
@click.option("--wae-init", type=click.Choice(["haar", "random"]), default="haar", show_default=True,
              help="Start the WAE from a Haar split, or from random weights.")
@click.option("--gamma", default=1e-3, show_default=True, help="Weight of the WAE loss in joint training.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA where present, else the CPU.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True,
              help="Mixed precision. auto: bf16 on a CPU with AVX512-BF16 or a GPU that has it, else fp16 "
              "with loss scaling on CUDA, else FP32.")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Train with DDP on N local processes (through torch.distributed.run; or launch "
              "'torchrun ... -m wae_deploy train' yourself).")
@click.option("--sync-bn", is_flag=True, help="Distributed: BatchNorm statistics over the global batch.")
@click.option("--threads", type=int, help="Torch threads [default: all cores].")
@click.option("--wae-lr", default=3e-3, show_default=True, help="Adam learning rate of stage 1 (the WAE alone).")
@click.option("--eval-every", default=1, show_default=True, type=click.IntRange(1),
              help="Score the test split every N epochs (and at the end of each stage).")
@click.option("--half-weights", is_flag=True, help="Store the weights in FP16 (half the file; loaded as FP32).")
@click.option("--teacher", type=click.Path(), help="Distil from this checkpoint's logits (same classes and input).")
@click.option("--kd-weight", default=1.0, show_default=True, help="Weight of the distillation loss.")
@click.option("--kd-temp", default=4.0, show_default=True, help="Softmax temperature of the distillation loss.")
@click.option("--stream", is_flag=True, help="Decode an ImageNet layout (train/<class>/, val/) on the fly in "
              "worker processes instead of into memory (data sets that do not fit in memory).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0),
              help="--stream: decoding processes per training process.")
@click.option("--max-bad-images", default=10, show_default=True, type=click.IntRange(0),
              help="--stream: undecodable images are skipped with a warning up to this many, then the run fails.")
@click.option("--limit-batches", type=int, hidden=True)
@click.option("--limit-eval", type=int, hidden=True)
@click.option("--step-log", type=click.Path(), hidden=True, help="Append each step's global-batch loss (JSON lines).")
@click.option("--resume", is_flag=True, help="Continue from <out>.train-state.pt.")
def train(arch, data, out, threads, nproc, **kw):
    """Train a WAE model (three stages) or a baseline; writes a checkpoint and a model card."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from wae_deploy.training import distributed, modelcard
    from wae_deploy.training.models import parse_arch
    from wae_deploy.training.train import TrainConfig
    from wae_deploy.training.train import train as run

    parse_arch(arch)
    if nproc != 1 and "WORLD_SIZE" not in os.environ:
        # Checked here, before N processes start, so a bad request is one line, not N.
        distributed.check_nproc(nproc, distributed.resolve_device(kw["device"]))
        distributed.launch(nproc, distributed.without_nproc(sys.argv[1:]))
        return
    if threads:
        torch.set_num_threads(threads)
    out = out or f"{arch}.pt"
    cfg = TrainConfig(arch=arch, out=out, data=data, **kw)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True, disable=not sys.stderr.isatty()) as progress:
        ckpt = run(cfg, log=progress.console.print if sys.stderr.isatty() else click.echo, progress=progress)
    if ckpt is None:  # a rank other than 0: rank 0 writes the files
        return
    card = modelcard.write(ckpt, out, command_line())
    click.echo(f"wrote {out} and {card}")
