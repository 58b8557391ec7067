"""`wae-deploy convert`."""

from __future__ import annotations

from pathlib import Path

import click

from wae_deploy.cli.options import command_line, load_foreign, weights_options
from wae_deploy.core.errors import UserError


@click.command()
@click.argument("weights", type=click.Path())
@click.option("-o", "--out", type=click.Path(), required=True, help="The wae-deploy checkpoint to write (.pt).")
@weights_options
def convert(weights, out, arch, prototxt, verbose, **kw):
    """Turn foreign weights (state_dict, .safetensors, the authors' .caffemodel) into a wae-deploy checkpoint.

    The checkpoint names its architecture, preprocessing and classes and the source's sha256, so
    export, build and bench need no flags; a model card (.md) beside it says what is not known.
    """
    from wae_deploy.training import checkpoint, modelcard

    if Path(out).resolve() == Path(weights).resolve():
        raise UserError(f"-o {out} would overwrite the weights being converted")
    if Path(out).suffix == ".md":
        raise UserError(f"-o {out}: the model card is written beside the checkpoint; name the checkpoint .pt")
    ckpt = load_foreign(weights, arch, prototxt, verbose, **kw)
    checkpoint.save(ckpt, out)
    card = modelcard.write(ckpt, out, command_line())
    click.echo(f"wrote {out} ({ckpt.arch}, {ckpt.config['num_classes']} classes, "
               f"{ckpt.provenance['source_layout']} layout) and {card}")
