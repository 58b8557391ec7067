"""The wae-deploy command line: one module per command, parsing and printing only.

The work lives in the packages below (runtime, convert, training, benchmark); nothing imports
the CLI. Every error reaches the user as one `error:` line and a documented exit status:
1 a check failed (a gate, an accuracy bound, a target not ready), 2 bad input, 3 an internal
error, 130 interrupted.
"""

from __future__ import annotations

import os
import sys

import click

from wae_deploy.cli import (
    bench,
    build,
    convert,
    doctor,
    export,
    flops,
    inspect_command,
    predict,
    profile_command,
    report,
    train,
)
from wae_deploy.cli.options import one_line
from wae_deploy.core import __version__, extras
from wae_deploy.core.errors import UserError


class Group(click.Group):
    """Turns UserError (and stray OS errors) into one line on stderr and a documented exit status."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # no command at all: the help text, as usual
        except click.UsageError as e:  # a bad option before the command
            click.echo(f"error: {one_line(e.format_message())} (see '{info_name} --help')", err=True)
            sys.exit(e.exit_code)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {one_line(str(e))}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            # Usage errors too (bad option values, missing arguments, unknown commands): one line, exit 2.
            hint = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) is not None else ""
            click.echo(f"error: {one_line(e.format_message())}{hint}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - a bug must still not spill a traceback on users
            if isinstance(e, ModuleNotFoundError) and e.name and extras.known(e.name):  # a base install running export
                click.echo(f"error: this command needs {e.name}: {extras.install_command(e.name)}", err=True)
                sys.exit(2)
            if os.environ.get("WAE_DEBUG"):
                raise
            click.echo(f"error: internal error: {type(e).__name__}: {one_line(str(e))} "
                       "(set WAE_DEBUG=1 for a traceback)", err=True)
            sys.exit(3)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wae-deploy")
def main():
    """Train, export, build and benchmark WAE-accelerated image classifiers."""


for command in (train.train, flops.flops, export.export, convert.convert, inspect_command.inspect_command,
                doctor.doctor, build.build, predict.predict, bench.bench, profile_command.profile_command,
                report.report):
    main.add_command(command)
