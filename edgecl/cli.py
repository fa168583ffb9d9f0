"""The `edgecl` command line: one click group, each command in edgecl/commands/<name>.py."""

from __future__ import annotations

import sys

import click

from edgecl import __version__
from edgecl.errors import EdgeclError


class _Group(click.Group):
    """Turns EdgeclError into a one-line message and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeclError as error:
            click.echo(f"edgecl: error: {error}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgecl")
def main() -> None:
    """edgecl: on-device class-incremental learning for sound classification.

    Train a continual learner phase by phase, ship every phase to a device as ONNX and int8,
    and measure what each step costs.
    """


def _register() -> None:
    # Commands are imported here, not at module top, so `edgecl --help` stays quick and a
    # command's heavy imports (torch) happen only when it runs.
    from edgecl.commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register()
