"""`edgecl report WORKSPACE`: the paper's tables and plots from a grid's runs."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("workspace", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder [WORKSPACE/report].")
@click.option("--no-plots", is_flag=True, help="Tables only.")
@click.option("--paired", metavar="OPTION", default=None,
              help="Also compare methods that differ in this edgecl train option only (e.g. "
                   "precision), runs matched by seed and fold: mean difference and a paired "
                   "t-test of A_last and BWT.")
def report_command(workspace: str, out: str | None, no_plots: bool, paired: str | None) -> None:
    """Tables and plots per method from the runs under WORKSPACE.

    Per method (every option except seed and test fold): mean and std over seeds and folds of A_avg, A_last, BWT, forgetting, memory-update seconds and train seconds, as report.md,
    report.csv and report.json, plus PNG plots. Incomplete and failed runs are listed apart; a
    results.json or grid.json that cannot be read is skipped with a warning naming it."""
    from edgecl.report import write_report

    written = write_report(workspace, out, plots=not no_plots,
                           paired=None if paired is None else paired.replace("-", "_"))
    ws = written.pop("workspace")
    for text in ws.unreadable:
        click.echo(f"warning: skipped {text}", err=True)
    click.echo(open(written["markdown"], encoding="utf-8").read().rstrip())
    click.echo("")
    click.echo(f"{len(ws.groups)} methods, {sum(len(g.runs) for g in ws.groups)} complete runs, "
               f"{len(ws.incomplete)} incomplete or failed"
               + (f", {len(ws.unreadable)} unreadable file(s) skipped" if ws.unreadable else ""))
    for key in ("markdown", "csv", "json"):
        click.echo(f"wrote {written[key]}")
    for path in written.get("plots", []):
        click.echo(f"wrote {path}")
