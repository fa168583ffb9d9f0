"""Every run folder under a workspace with its status, for `edgecl summarize`.

A run folder is any folder holding a results.json, a train.log or a phase_<i>/ folder. Its status:
`complete`; `unfinished` (results.json with "complete": false: killed or stopped after some
phases); `failed` (results.json records a "failed" reason); `no results` (no results.json yet:
killed, or stopped by an error, during phase 0); `unreadable` (a results.json that is not valid
JSON of the expected shape; the row's `error` says why). A bad file never hides the other runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgecl.errors import EdgeclError
from edgecl.results import summary_row
from edgecl.run_folder import LOG_NAME, PHASE_PREFIX, RESULTS_NAME

# Top-level results.json fields the summary reads, and the JSON types they must have.
_SHAPE = {"config": dict, "phases": list, "memory_update_seconds": list,
          "A_avg": (int, float, type(None)), "A_last": (int, float, type(None)),
          "BWT": (int, float, type(None)), "complete": bool}


def _run_folders(workspace: Path) -> list[Path]:
    found = {p.parent for name in (RESULTS_NAME, LOG_NAME) for p in workspace.rglob(name)}
    found |= {p.parent for p in workspace.rglob(f"{PHASE_PREFIX}*")
              if p.is_dir() and p.name[len(PHASE_PREFIX):].isdigit()}
    return sorted(found)


def shape_problem(results: Any) -> str | None:
    """Why `results` is not a results document the summary can read (None when it is)."""
    if not isinstance(results, dict):
        return f"expected a JSON object, found {type(results).__name__}"
    for key, kind in _SHAPE.items():
        if key in results and not isinstance(results[key], kind):
            return f"field {key!r} has the wrong type ({type(results[key]).__name__})"
    if not all(isinstance(p, dict) for p in results.get("phases", [])):
        return "field 'phases' must be a list of objects"
    return None


def _row(name: str, folder: Path) -> dict[str, Any]:
    path = folder / RESULTS_NAME
    if not path.exists():
        return {"run": name, "status": "no results", "complete": False}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        problem = f"not readable JSON ({' '.join(str(error).split())})"
    else:
        problem = shape_problem(results)
        if problem is None:
            try:
                row = summary_row(name, results)
            except (AttributeError, KeyError, TypeError, ValueError, IndexError) as error:
                problem = f"unexpected content ({type(error).__name__}: {error})"
            else:
                status = ("failed" if results.get("failed") else
                          "complete" if results.get("complete", True) else "unfinished")
                return {**row, "status": status}
    return {"run": name, "status": "unreadable", "complete": False,
            "error": f"{path}: {problem}"}


def collect_runs(workspace: str | Path) -> list[dict[str, Any]]:
    """Summary rows (with `status`) of every run folder under `workspace`, sorted by name."""
    workspace = Path(workspace)
    if not workspace.is_dir():
        raise EdgeclError(f"{workspace}: expected a workspace folder with runs in it")
    return [_row(str(folder.relative_to(workspace)), folder)
            for folder in _run_folders(workspace)]
