"""Every run folder under a workspace with its status, for `edgecl summarize`.

A run folder is any folder holding a results.json, a train.log or a phase_<i>/ folder. Its status:
`complete`; `unfinished` (results.json with "complete": false: killed or stopped after some
phases); `failed` (results.json records a "failed" reason); `no results` (no results.json yet:
killed, or stopped by an error, during phase 0); `unreadable` (a results.json that is not valid
JSON of the expected shape, edgecl.schema; the row's `error` names the file and why). A bad file
never hides the other runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecl.errors import EdgeclError
from edgecl.results import summary_row
from edgecl.run_folder import LOG_NAME, PHASE_PREFIX, RESULTS_NAME
from edgecl.schema import read_results


def _run_folders(workspace: Path) -> list[Path]:
    found = {p.parent for name in (RESULTS_NAME, LOG_NAME) for p in workspace.rglob(name)}
    found |= {p.parent for p in workspace.rglob(f"{PHASE_PREFIX}*")
              if p.is_dir() and p.name[len(PHASE_PREFIX):].isdigit()}
    return sorted(found)


def _row(name: str, folder: Path) -> dict[str, Any]:
    path = folder / RESULTS_NAME
    if not path.exists():
        return {"run": name, "status": "no results", "complete": False}
    try:
        results = read_results(path)
        row = summary_row(name, results)
    except EdgeclError as error:  # read_results names the file and the field at fault
        return {"run": name, "status": "unreadable", "complete": False, "error": str(error)}
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
