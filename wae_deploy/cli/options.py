"""What several commands share: option types and groups, and the command line as typed."""

from __future__ import annotations

import shlex
import sys

import click


def one_line(message: str) -> str:
    """Messages from libraries can span lines; the user gets one."""
    return " ".join(message.split())


def command_line() -> str:
    """This command as the user typed it, for model cards and results."""
    return "wae-deploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])


class BatchType(click.ParamType):
    name = "dynamic|N"

    def convert(self, value, param, ctx):
        if value in (None, "dynamic") or isinstance(value, int):
            return None if value == "dynamic" else value
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither 'dynamic' nor an integer", param, ctx)
        if n < 1:
            self.fail(f"batch must be positive, got {n}", param, ctx)
        return n


def weights_options(f):
    """Options that name the model for weights wae-deploy did not write (export and convert)."""
    options = [
        click.option("--arch", help="The model the weights are for (a state_dict, .safetensors or .caffemodel); "
                     "a wae-deploy checkpoint names its own."),
        click.option("--num-classes", type=click.IntRange(1), help="[default: the architecture's]"),
        click.option("--input-size", type=click.IntRange(2), help="[default: the preprocessing's crop]"),
        click.option("--preprocessing", "preprocessing_spec", metavar="imagenet|cifar10|FILE.json",
                     help="[default: the architecture's]"),
        click.option("--classes", type=click.Path(), help="Class names, one per line [default: 0..N-1]."),
        click.option("--prototxt", type=click.Path(), help="The Caffe net definition beside a .caffemodel."),
        click.option("--allow-nonfinite", is_flag=True, help="Take NaN/Inf weights with a warning."),
        click.option("--verbose", is_flag=False, flag_value="-", metavar="[=FILE]",
                     help="On a mismatch, list every key (on stderr, or in FILE)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def load_foreign(weights, arch, prototxt, verbose, **options):
    """training.weights.import_weights, with a mismatch's full key list where --verbose says."""
    from wae_deploy.core import atomic
    from wae_deploy.training.weights import WeightsMismatch, import_weights

    try:
        return import_weights(weights, arch, prototxt, warn=lambda m: click.echo(m, err=True), **options)
    except WeightsMismatch as e:
        if verbose == "-":
            for line in e.details:
                click.echo(line, err=True)
        elif verbose:
            atomic.write_text(verbose, "\n".join(e.details) + "\n")
        raise


def csv_of(kind):
    def parse(ctx, param, value):
        if value is None:
            return None
        items = [v.strip() for v in value.split(",") if v.strip()]
        try:
            return [kind(v) for v in items]
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list of {kind.__name__}") from None
    return parse
