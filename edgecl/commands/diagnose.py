"""`edgecl diagnose RUN`: where a continual run's accuracy goes (edgecl.report.forgetting)."""

from __future__ import annotations

import click

from edgecl.fileio import json_text


@click.command("diagnose")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--phase", type=int, default=None,
              help="Phase whose checkpoint to diagnose [the last completed one].")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON.")
def diagnose_command(run: str, phase: int | None, as_json: bool) -> None:
    """Per-task accuracy, errors on old tasks that go to the newest classes, head weight norms per
    task, BatchNorm running statistics between old and newest classes, and the accuracy with
    weight aligning or class-balanced BatchNorm statistics applied after the fact."""
    from edgecl.report.forgetting import diagnose, format_diagnosis

    result = diagnose(run, phase)
    click.echo(json_text(result) if as_json else format_diagnosis(result))
