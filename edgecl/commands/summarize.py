"""`edgecl summarize WORKSPACE`: one table over every run's results.json."""

from __future__ import annotations

import json

import click

from edgecl.results import SUMMARY_COLUMNS, collect_runs, format_table


@click.command("summarize")
@click.argument("workspace", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def summarize_command(workspace: str, as_json: bool) -> None:
    """Table of every run under WORKSPACE: method, k, memory, A_avg, A_last, BWT and the mean
    memory-update time in seconds."""
    rows = collect_runs(workspace)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no results.json under {workspace}")
        return
    click.echo(format_table(rows, SUMMARY_COLUMNS))
    unfinished = [r["run"] for r in rows if not r["complete"]]
    if unfinished:
        click.echo(f"unfinished runs (partial results): {', '.join(unfinished)}")
