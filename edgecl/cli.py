"""The `edgecl` command line: one click group, each command in edgecl/commands/<name>.py."""

from __future__ import annotations

import os
import sys

import click

from edgecl import __version__
from edgecl.errors import EdgeclError


def os_error_message(error: OSError) -> str:
    """`PATH: reason` of a failed file operation (no space, read-only, not a folder, ...)."""
    reason = error.strerror or " ".join(str(error).split())
    if isinstance(error, FileExistsError) and os.path.isfile(error.filename or ""):
        reason = "a file is in the way (expected a folder)"
    return f"{error.filename}: {reason}" if error.filename is not None else reason


class _Group(click.Group):
    """Turns EdgeclError, and any file-system failure (OSError), into a one-line message and exit
    code 2, never a traceback. The writers (edgecl.fileio) have removed their temporary files."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeclError as error:
            click.echo(f"edgecl: error: {' '.join(str(error).split())}", err=True)
            sys.exit(2)
        except OSError as error:
            click.echo(f"edgecl: error: {os_error_message(error)}", err=True)
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
