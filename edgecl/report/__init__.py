"""`edgecl report`: per-method tables (Markdown, CSV, JSON) and PNG plots from a workspace.

aggregate.py groups complete runs by method and takes mean and std over seeds and folds;
paired.py compares methods that differ in one option only, seed by seed (`--paired OPTION`);
tables.py writes report.md / report.csv / report.json; plots.py draws the PNGs.
"""

from __future__ import annotations

from pathlib import Path

from edgecl.fileio import atomic_write_json, atomic_write_text


def write_report(workspace: str | Path, out: str | Path | None = None,
                 plots: bool = True, paired: str | None = None) -> dict[str, list[Path] | Path]:
    """Write report.md, report.csv, report.json and the plots to `out`
    (default WORKSPACE/report); returns the paths written. `paired` (an edgecl train option,
    e.g. "precision") adds the paired comparison of methods that differ in it only."""
    from edgecl.report import tables
    from edgecl.report.aggregate import load_workspace
    from edgecl.report.paired import paired_comparisons

    out = Path(out) if out is not None else Path(workspace) / "report"
    ws = load_workspace(workspace, exclude=out)
    pairs = None if paired is None else {"option": paired,
                                         "pairs": paired_comparisons(ws, paired)}
    paths = {
        "markdown": atomic_write_text(out / "report.md", tables.markdown(ws, paired=pairs)),
        "csv": atomic_write_text(out / "report.csv", tables.csv_text(ws)),
        "json": atomic_write_json(out / "report.json", tables.json_document(ws, pairs)),
    }
    written: dict[str, list[Path] | Path] = dict(paths)
    if plots:
        from edgecl.report.plots import write_plots

        written["plots"] = write_plots(ws, out)
    written["workspace"] = ws  # type: ignore[assignment]
    return written
