"""The `edgecl` command line: one click group, each command in edgecl/commands/<name>.py."""

from __future__ import annotations

import os
import sys

import click

from edgecl import __version__
from edgecl.allocator import allow_huge_pages, caching_allocator_environment
from edgecl.errors import EdgeclError

# Before any command imports torch, whose CPU allocator reads this once (edgecl.allocator).
allow_huge_pages()
# Commands whose training steps run in this process, restarted under the caching allocator.
TRAINING_COMMANDS = ("train", "bench")


def restart_under_caching_allocator(argv: list[str]) -> None:
    """A training command started as a program runs again under jemalloc where it is installed
    and not loaded yet (edgecl.allocator): same results, a training step's peak near its bytes
    in use without returning memory to the system. EDGECL_ALLOCATOR=system opts out."""
    orig_argv = getattr(sys, "orig_argv", None)
    if not orig_argv or len(argv) < 2 or argv[1] not in TRAINING_COMMANDS:
        return
    environment = caching_allocator_environment()
    if environment is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, orig_argv, environment)


def os_error_message(error: OSError) -> str:
    """`PATH: reason` of a failed file operation (no space, read-only, not a folder, ...)."""
    reason = error.strerror or " ".join(str(error).split())
    if isinstance(error, FileExistsError) and os.path.isfile(error.filename or ""):
        reason = "a file is in the way (expected a folder)"
    return f"{error.filename}: {reason}" if error.filename is not None else reason


class _Group(click.Group):
    """Turns EdgeclError, and any file-system failure (OSError), into a one-line message and exit
    code 2, never a traceback. The writers (edgecl.fileio) have removed their temporary files."""

    def main(self, *args, **kwargs):
        """Click's own usage errors (a bad option value, an unknown command) as one line too:
        `edgecl: error: edgecl train: Invalid value for '--epochs': ... (try --help)`, exit 2."""
        kwargs.pop("standalone_mode", None)
        if not args and "args" not in kwargs:  # a program start, not a test's in-process call
            restart_under_caching_allocator(sys.argv)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as error:
            click.echo(error.format_message(), err=True)  # the help text, as click prints it
            sys.exit(error.exit_code)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else "edgecl"
            message = " ".join(error.format_message().split())
            click.echo(f"edgecl: error: {where}: {message} (try '{where} --help')", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            click.echo(f"edgecl: error: {' '.join(error.format_message().split())}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # --help and --version end with ctx.exit(0), which returns its code without standalone
        # mode; a command's own return value is not an exit code.
        sys.exit(code if isinstance(code, int) else 0)

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
