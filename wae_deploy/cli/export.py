"""`wae-deploy export`."""

from __future__ import annotations

from pathlib import Path

import click

from wae_deploy.cli.options import BatchType, load_foreign, weights_options


@click.command()
@click.argument("ckpt", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="ONNX path [default: CKPT with .onnx].")
@click.option("--opset", default=18, show_default=True, type=int)
@click.option("--batch", default="dynamic", type=BatchType(), show_default=True, help="'dynamic' or a fixed batch.")
@click.option("--simplifier", default="onnxslim", show_default=True,
              type=click.Choice(["onnxslim", "onnxsim", "none"]))
@click.option("--verify", default=64, show_default=True, help="Real images compared against PyTorch (0: skip).")
@click.option("--data", type=click.Path(), help="Images for verification [default: the model's evaluation set].")
@click.option("--parts", is_flag=True, help="Also export the encoder alone (outputs I_L and I_H).")
@weights_options
def export(ckpt, out, opset, batch, simplifier, verify, data, parts, arch, prototxt, verbose, **weights):
    """Export a checkpoint, or plain weights with --arch, to a simplified, verified ONNX model."""
    from wae_deploy.training.export import export as run

    foreign = None
    if arch or prototxt or Path(ckpt).suffix in (".safetensors", ".caffemodel"):
        foreign = load_foreign(ckpt, arch, prototxt, verbose, **weights)
    result = run(ckpt, out, opset=opset, batch=batch, simplifier=simplifier, verify=verify, data=data, parts=parts,
                 ckpt=foreign)
    m = result.manifest
    click.echo(f"wrote {result.path} ({m['bytes'] / 1e6:.2f} MB, opset {m['opset']}, batch {m['batch']}) "
               f"in {m['seconds']:.1f} s")
    click.echo(f"  nodes {m['nodes_before']} -> {m['nodes_after']} ({m['simplifier']})")
    if m["parity"]:
        p = m["parity"]
        click.echo(f"  ONNX Runtime vs PyTorch on {p['n']} real images: max |diff| {p['max_abs_diff']:.1e}, "
                   f"top-1 agreement {100 * p['top1_agreement']:.1f}%")
    if m["note"]:
        click.echo(f"  note: {m['note']}")
    for part in m["parts"]:
        click.echo(f"  wrote {Path(result.path).with_name(part)}")
    click.echo(f"  manifest {Path(result.path).with_suffix('.json')}")
