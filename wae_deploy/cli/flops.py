"""`wae-deploy flops`."""

from __future__ import annotations

import click


@click.command()
@click.argument("arch", required=False)
@click.option("--size", type=int, help="Input size [default: the architecture's].")
def flops(arch, size):
    """Multiply-adds and parameters per branch, and the theoretical speed-up over the baseline."""
    from wae_deploy.training.models import create_model, list_archs, parse_arch
    from wae_deploy.training.models.flops import baseline_of, count

    for name in [arch] if arch else list_archs():
        family = parse_arch(name)[1]
        s = size or family.preprocessing.crop
        c = count(create_model(name, input_size=s), s)
        base = count(create_model(baseline_of(name), input_size=s), s)
        branches = ", ".join(f"{k} {v / 1e9:.3f}" for k, v in c.macs.items())
        click.echo(f"{name:<18} {s:>4}px  {c.total_macs / 1e9:7.3f} G MACs ({branches})  "
                   f"{c.total_params / 1e6:7.2f} M params  speed-up {base.total_macs / c.total_macs:.2f}x")
