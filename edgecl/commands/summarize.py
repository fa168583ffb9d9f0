"""`edgecl summarize WORKSPACE`: one table over every run's results.json."""

from __future__ import annotations

import click

from edgecl.fileio import json_text
from edgecl.results import SUMMARY_COLUMNS, format_table, summary_cells
from edgecl.run_list import collect_runs


@click.command("summarize")
@click.argument("workspace", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def summarize_command(workspace: str, as_json: bool) -> None:
    """Table of every run folder under WORKSPACE: status (complete, unfinished, failed, no results,
    unreadable), dataset, seed, epochs, method (with k), memory size, A_avg, A_last, BWT and the
    mean memory-update time in seconds; it fits 100 columns. --json adds the device budgets
    (memory bytes, steps, training and update GMACs, device RAM), all as numbers (null when
    missing or not finite: the output is strict JSON). An unreadable
    results.json is shown as such, with the reason below the table."""
    rows = collect_runs(workspace)
    if as_json:
        click.echo(json_text(rows))
        return
    if not rows:
        click.echo(f"no run folders under {workspace}")
        return
    click.echo(format_table([summary_cells(row) for row in rows], SUMMARY_COLUMNS))
    unfinished = [r["run"] for r in rows if r["status"] in ("unfinished", "no results")]
    if unfinished:
        click.echo(f"unfinished runs (partial or no results): {', '.join(unfinished)}")
    for row in rows:
        if row["status"] == "unreadable":
            click.echo(f"unreadable: {row['error']}")
