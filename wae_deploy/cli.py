"""The wae-deploy command line: parsing and printing only; the work lives in the modules."""

from __future__ import annotations

import os
import shlex
import sys

import click

from . import __version__
from .errors import UserError


class Group(click.Group):
    """Turns UserError (and stray OS errors) into one line on stderr and a documented exit status."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - a bug must still not spill a traceback on users
            if os.environ.get("WAE_DEBUG"):
                raise
            click.echo(f"error: internal error: {type(e).__name__}: {e} (set WAE_DEBUG=1 for a traceback)", err=True)
            sys.exit(3)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wae-deploy")
def main():
    """Train, export, build and benchmark WAE-accelerated image classifiers."""


@main.command()
@click.option("--arch", required=True, help="e.g. wae-resnet20, resnet20, resnet20-resized, resnet20-dwt.")
@click.option("--data", type=click.Path(), help="Data root [default: $WAE_DATA, ../shared/data/cifar10, or a download].")
@click.option("-o", "--out", type=click.Path(), help="Checkpoint path [default: ./<arch>.pt].")
@click.option("--epochs", default=30, show_default=True, help="Classifier + joint epochs.")
@click.option("--wae-epochs", default=2, show_default=True, help="Stage 1: WAE alone (WAE models only).")
@click.option("--joint-epochs", type=int, help="Stage 3: joint fine-tuning [default: a quarter of --epochs].")
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=0.2, show_default=True, help="Peak learning rate (one-cycle).")
@click.option("--lambda", "lambda_energy", default=1.0, show_default=True,
              help="Weight of the energy loss on I_H; 0 is the paper's no-energy ablation.")
@click.option("--gamma", default=1e-3, show_default=True, help="Weight of the WAE loss in joint training.")
@click.option("--seed", default=0, show_default=True)
@click.option("--bf16/--no-bf16", default=None, help="bf16 autocast [default: on where the CPU has AVX512-BF16].")
@click.option("--threads", type=int, help="Torch threads [default: all cores].")
@click.option("--limit-batches", type=int, hidden=True)
@click.option("--limit-eval", type=int, hidden=True)
@click.option("--resume", is_flag=True, help="Continue from <out>.train-state.pt.")
def train(arch, data, out, threads, **kw):
    """Train a WAE model (three stages) or a baseline; writes a checkpoint and a model card."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from . import modelcard
    from .models import parse_arch
    from .train import TrainConfig, train as run

    parse_arch(arch)
    if threads:
        torch.set_num_threads(threads)
    out = out or f"{arch}.pt"
    cfg = TrainConfig(arch=arch, out=out, data=data, **kw)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True, disable=not sys.stderr.isatty()) as progress:
        ckpt = run(cfg, log=progress.console.print if sys.stderr.isatty() else click.echo, progress=progress)
    command = "wae-deploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    card = modelcard.write(ckpt, out, command)
    click.echo(f"wrote {out} and {card}")


@main.command()
@click.argument("arch", required=False)
@click.option("--size", type=int, help="Input size [default: the architecture's].")
def flops(arch, size):
    """Multiply-adds and parameters per branch, and the theoretical speed-up over the baseline."""
    from .models import create_model, list_archs, parse_arch
    from .models.flops import baseline_of, count

    for name in [arch] if arch else list_archs():
        family = parse_arch(name)[1]
        s = size or family.preprocessing.crop
        c = count(create_model(name, input_size=s), s)
        base = count(create_model(baseline_of(name), input_size=s), s)
        branches = ", ".join(f"{k} {v / 1e9:.3f}" for k, v in c.macs.items())
        click.echo(f"{name:<18} {s:>4}px  {c.total_macs / 1e9:7.3f} G MACs ({branches})  "
                   f"{c.total_params / 1e6:7.2f} M params  speed-up {base.total_macs / c.total_macs:.2f}x")


if __name__ == "__main__":
    main()
