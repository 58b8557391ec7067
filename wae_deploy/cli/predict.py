"""`wae-deploy predict`."""

from __future__ import annotations

import sys

import click

from wae_deploy.cli.options import one_line
from wae_deploy.core.errors import UserError


@click.command()
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--target", "target_name", default="auto", show_default=True,
              help="auto: the runtime the artifact was built for (ONNX Runtime for an .onnx model).")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1), help="Classes shown per image.")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1), help="Images per inference call.")
@click.option("--threads", type=click.IntRange(1), help="Runtime threads [default: all cores].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
def predict(model, images, target_name, top_k, batch, threads, as_json):
    """Classify images (files or folders) with an artifact or an exported ONNX model."""
    import json
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from wae_deploy.runtime.predict import image_files, load, predict_files

    files = list(image_files(images))
    bar = sys.stderr.isatty() and len(files) > 1
    failed = 0
    with load(model, target_name, threads) as m, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                     console=Console(stderr=True, highlight=False), transient=True, disable=not bar) as progress:
        def warn(line: str) -> None:
            if bar:  # through the bar's console while it is drawn, so the line does not tear it
                progress.console.print(line, markup=False)
            else:
                click.echo(line, err=True)

        task = progress.add_task("classifying", total=len(files))
        t0 = time.perf_counter()
        for result in predict_files(m, files, top_k, batch):
            progress.advance(task)
            if isinstance(result, UserError):
                if len(files) == 1:
                    raise result
                failed += 1
                warn(f"error: {one_line(str(result))}")
            elif as_json:
                click.echo(json.dumps(result.to_dict()))
            else:
                click.echo(f"{result.source}: " + ", ".join(f"{c} {p:.3f}" for c, p in result.top))
        seconds = time.perf_counter() - t0
    done = len(files) - failed
    if len(files) > 1:
        click.echo(f"{done} images in {seconds:.2f} s ({done / seconds:.1f} images/s, decoding included) on "
                   f"{m.target} {m.precision}" + (f"; {failed} unreadable" if failed else ""), err=True)
    if failed:
        raise UserError(f"{failed} of {len(files)} images could not be read (listed above)")
