"""`wae-deploy inspect` (named so as not to shadow the standard library's inspect)."""

from __future__ import annotations

import click


@click.command(name="inspect")
@click.argument("ckpt", type=click.Path())
@click.option("--image", "images", multiple=True, type=click.Path(), metavar="FILE",
              help="An image to decompose (repeatable) [default: images of the evaluation split].")
@click.option("-o", "--out", type=click.Path(), help="PNG path [default: ./<ckpt stem>-inspect.png].")
@click.option("--data", type=click.Path(), help="Data root for the evaluation split [default: the model's].")
@click.option("--count", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Images from the evaluation split without --image (the first of each class in turn).")
def inspect_command(ckpt, images, out, data, count):
    """Picture a WAE checkpoint's split (I_L, I_H, reconstruction) and its cost per branch."""
    from rich.console import Console

    from wae_deploy.training.inspection import inspect as run
    from wae_deploy.training.inspection import render_table, summary_lines

    result = run(ckpt, images=images, out=out, data=data, count=count)
    Console(highlight=False).print(render_table(result))
    for line in summary_lines(result):
        click.echo(line)
