"""`wae-deploy doctor`."""

from __future__ import annotations

import os
import sys

import click


@click.command()
@click.option("--target", "targets", multiple=True, metavar="T[:PRECISION]",
              help="A target that must be ready (repeatable): torch, ort, openvino, trt, optionally :fp16 etc.; "
                   "exit 1 when one is not.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(targets, as_json):
    """What this machine can run: each target and precision, and for what it cannot, why and the fix."""
    from wae_deploy.runtime.doctor import diagnose, footer_lines, header_lines, render_table

    report = diagnose(targets)
    if as_json:
        import json

        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        from rich.console import Console

        for line in header_lines(report):
            click.echo(line)
        wide = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120  # CI logs: no needless wrapping
        Console(highlight=False, width=wide).print(render_table(report))
        for line in footer_lines(report):
            click.echo(line)
    sys.exit(report.exit_code)
