"""`wae-deploy profile` (named so as not to shadow the standard library's profile)."""

from __future__ import annotations

import click


@click.command(name="profile")
@click.argument("model", type=click.Path())
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1), help="Images per call.")
@click.option("--runs", default=20, show_default=True, type=click.IntRange(1), help="Profiled runs after warm-up.")
@click.option("--threads", type=click.IntRange(1), help="Runtime threads [default: all cores].")
@click.option("--top", default=15, show_default=True, type=click.IntRange(1), help="Slowest layers shown.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON (every layer).")
def profile_command(model, batch, runs, threads, top, as_json):
    """Per-layer time, executed precision and kernel of an artifact (or an .onnx on ONNX Runtime)."""
    import json

    from wae_deploy.runtime.layer_profile import profile, table_lines

    prof = profile(model, batch, runs, threads)
    if as_json:
        click.echo(json.dumps(prof.to_dict(top=None), indent=1))
    else:
        click.echo("\n".join(table_lines(prof, top)))
