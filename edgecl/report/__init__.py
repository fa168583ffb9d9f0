"""`edgecl report`: per-method tables (Markdown, CSV, JSON) and PNG plots from a workspace.

aggregate.py groups complete runs by method and takes mean and std over seeds and folds;
tables.py writes report.md / report.csv / report.json; plots.py draws the PNGs.
"""

from __future__ import annotations

from pathlib import Path

from edgecl.fileio import atomic_write_json, atomic_write_text


def write_report(workspace: str | Path, out: str | Path | None = None,
                 plots: bool = True) -> dict[str, list[Path] | Path]:
    """Write report.md, report.csv, report.json and the plots to `out`
    (default WORKSPACE/report); returns the paths written."""
    from edgecl.report import tables
    from edgecl.report.aggregate import load_workspace

    out = Path(out) if out is not None else Path(workspace) / "report"
    ws = load_workspace(workspace, exclude=out)
    paths = {
        "markdown": atomic_write_text(out / "report.md", tables.markdown(ws)),
        "csv": atomic_write_text(out / "report.csv", tables.csv_text(ws)),
        "json": atomic_write_json(out / "report.json", tables.json_document(ws)),
    }
    written: dict[str, list[Path] | Path] = dict(paths)
    if plots:
        from edgecl.report.plots import write_plots

        written["plots"] = write_plots(ws, out)
    written["workspace"] = ws  # type: ignore[assignment]
    return written
