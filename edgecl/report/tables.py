"""report.md, report.csv and report.json from grouped runs (edgecl.report.aggregate)."""

from __future__ import annotations

import csv
import io
from typing import Any

from edgecl.report.aggregate import METRICS, Workspace

# (column, heading, digits) of the Markdown table
_MD_COLUMNS = (("A_avg", "A_avg", 3), ("A_last", "A_last", 3), ("BWT", "BWT", 3),
               ("forgetting", "forgetting", 3), ("mem_update_s", "memory update (s)", 3),
               ("train_s", "train (s)", 1))
# Only when some method corrected its deployed models (--bias-correction deployed).
_UNCORRECTED_COLUMN = ("A_last_uncorrected", "A_last uncorrected", 3)


def rows(ws: Workspace) -> list[dict[str, Any]]:
    return [group.stats() for group in ws.groups]


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None:
        return "-"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(ws: Workspace, title: str = "edgecl report") -> str:
    table = rows(ws)
    lines = [f"# {title}", "",
             "Mean ± sample standard deviation over each method's complete runs (seeds and test "
             "folds). memory update: mean seconds per memory update; train: total training "
             "seconds per run.", ""]
    columns = _MD_COLUMNS
    if any(row["A_last_uncorrected_mean"] is not None for row in table):
        columns += (_UNCORRECTED_COLUMN,)
    heads = ["method", "runs"] + [h for _, h, _ in columns]
    lines.append("| " + " | ".join(heads) + " |")
    lines.append("| " + " | ".join(["---"] * len(heads)) + " |")
    for row in table:
        cells = [row["method"], str(row["runs"])] + [
            _pm(row[f"{m}_mean"], row[f"{m}_std"], d) for m, _, d in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if ws.incomplete:
        lines += ["", "## Incomplete or failed runs (not averaged)", "",
                  "| run | method | reason |", "| --- | --- | --- |"]
        for item in ws.incomplete:
            reason = str(item["reason"]).replace("|", "\\|")
            lines.append(f"| {item['run']} | {item['method']} | {reason} |")
    if ws.unreadable:
        lines += ["", "## Unreadable files (skipped)", ""] + [f"- {text}" for text in ws.unreadable]
    return "\n".join(lines) + "\n"


def csv_text(ws: Workspace) -> str:
    columns = ["method", "runs"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows(ws):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def json_document(ws: Workspace) -> dict[str, Any]:
    return {
        "metrics": list(METRICS),
        "methods": [{**group.stats(), "options": group.key,
                     "run_names": [r.name for r in group.runs]} for group in ws.groups],
        "incomplete": ws.incomplete,
        "unreadable": ws.unreadable,
    }
