"""`wae-deploy report`."""

from __future__ import annotations

from pathlib import Path

import click

from wae_deploy.core.errors import UserError


@click.command()
@click.argument("history", type=click.Path())
@click.option("-o", "--out", type=click.Path(), default="site", show_default=True,
              help="Folder for index.html and github-action-benchmark's two JSON files.")
def report(history, out):
    """The trend page of a `bench --history` folder: one chart per metric and cell over commits, one
    line per host, the gate's verdicts marked, the latest run's table; no network needed to view it.

    Also writes the latest run in github-action-benchmark's customBiggerIsBetter and
    customSmallerIsBetter formats. A file that is not a readable results file is skipped with one line.
    """
    from wae_deploy.benchmark import action_benchmark, trend, trend_page
    from wae_deploy.benchmark import history as history_folder

    skipped: list[str] = []

    def warn(line: str) -> None:
        skipped.append(line)
        click.echo(line, err=True)

    runs = history_folder.read(history, warn=warn)
    if not runs:
        raise UserError(f"no readable runs in {history}: record some with `wae-deploy bench --history {history}`")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    t = trend.build(runs)
    page = trend_page.write(t, out / "index.html", skipped)
    bigger, smaller = action_benchmark.write(runs[-1], out)
    failed = sum(v.status == "fail" for v in t.verdicts)
    click.echo(f"wrote {page}: {len(runs)} runs, {len(t.commits)} commits, {len(t.hosts)} hosts, "
               f"{len(t.charts)} charts; runs failing the gate against their host's previous run: {failed}")
    click.echo(f"wrote {bigger} and {smaller} (the latest run, for github-action-benchmark)")
