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


def markdown(ws: Workspace, title: str = "edgecl report",
             paired: dict[str, Any] | None = None) -> str:
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
    if paired is not None:
        lines += paired_markdown(paired)
    if ws.unreadable:
        lines += ["", "## Unreadable files (skipped)", ""] + [f"- {text}" for text in ws.unreadable]
    return "\n".join(lines) + "\n"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def paired_markdown(paired: dict[str, Any]) -> list[str]:
    """The section of `edgecl report --paired OPTION`: `paired` is {"option", "pairs"} with the
    pairs of edgecl.report.paired.paired_comparisons."""
    lines = ["", f"## Paired by seed and fold: {paired['option']}", "",
             "Methods that differ in one option only, runs matched by seed and test fold: "
             "difference = other - baseline per pair, mean ± std; two-sided paired t-test; "
             "within 1 std: the other's mean lies within one baseline standard deviation of the "
             "baseline's mean.", ""]
    if not paired["pairs"]:
        return lines + [f"No two methods differ in {paired['option']} only."]
    lines += ["| baseline | other | figure | pairs | baseline | other | difference | t | p "
              "| within 1 std |", "| " + " | ".join(["---"] * 10) + " |"]
    for pair in paired["pairs"]:
        for metric, row in pair["metrics"].items():
            within = row["within_one_baseline_std"]
            cells = [pair["baseline"], pair["other"], metric, str(row["pairs"]),
                     _pm(row["baseline_mean"], row["baseline_std"], 3),
                     _pm(row["other_mean"], row["other_std"], 3),
                     _pm(row["diff_mean"], row["diff_std"], 3), _number(row["t"], 2),
                     _number(row["p"], 3), "-" if within is None else ("yes" if within else "no")]
            lines.append("| " + " | ".join(cells) + " |")
    for pair in paired["pairs"]:
        lines += _per_seed_lines(pair)
    return lines


def _per_seed_lines(pair: dict[str, Any]) -> list[str]:
    """Each matched seed's figures, baseline then other, and their difference."""
    metrics = pair["metrics"]
    heads = ["seed"] + [f"{m} {side}" for m in metrics for side in
                        (pair["baseline_value"], pair["other_value"], "difference")]
    lines = ["", f"{pair['baseline']} against {pair['other']}, per seed:", "",
             "| " + " | ".join(heads) + " |", "| " + " | ".join(["---"] * len(heads)) + " |"]
    for seed in pair["seeds"]:
        cells = [str(seed)]
        for row in metrics.values():
            if seed in row["seeds"]:
                i = row["seeds"].index(seed)
                a, b = row["baseline"][i], row["other"][i]
                cells += [f"{a:.3f}", f"{b:.3f}", f"{b - a:+.3f}"]
            else:
                cells += ["-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def csv_text(ws: Workspace) -> str:
    columns = ["method", "runs"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows(ws):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def json_document(ws: Workspace, paired: dict[str, Any] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "metrics": list(METRICS),
        "methods": [{**group.stats(), "options": group.key,
                     "run_names": [r.name for r in group.runs]} for group in ws.groups],
        "incomplete": ws.incomplete,
        "unreadable": ws.unreadable,
    }
    if paired is not None:
        document["paired"] = paired
    return document
