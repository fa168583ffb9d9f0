"""Owning a run folder WORKSPACE/EXP_NAME while a run writes it.

- The name stays inside the workspace: one path component, not `.` or `..` (`check_exp_name`).
- A lock: `fcntl.flock` on WORKSPACE/EXP_NAME/.lock, non-blocking, held until the run ends. The
  kernel drops it when the process dies, so a killed run never leaves the folder locked (the
  empty .lock file stays and means nothing by itself).
- A record: run.json holds the run's identity (`RunConfig.identity()`: every option that can
  change what the run computes), written at the start of the run, and the fingerprint of its data
  (edgecl.run_data). A folder whose run.json holds other options or other data, or that holds
  files without a run.json, is refused: never written into.
- `overwrite=True` empties the folder first: every entry is renamed into a hidden trash folder
  inside it (renames are atomic), which is then deleted; a trash folder left by a killed
  overwrite is deleted the next time the folder is opened, and so is what a killed run left
  (edgecl.leftovers: the writers' temporary files, the scratch folder).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecl.errors import EdgeclError
from edgecl.feature_store import STORE_FOLDER
from edgecl.fileio import atomic_write_json, remove_stale_temporaries
from edgecl.leftovers import remove_leftovers
from edgecl.run_folder import RESULTS_NAME, RUN_RECORD_NAME
from edgecl.schema import RUN_RECORD, TABLE_FIELDS, problem, read_checked, read_results

LOCK_NAME = ".lock"
TRASH_PREFIX = ".overwritten-"


def check_exp_name(name: str) -> str:
    """`name` if it is one folder name inside the workspace, else a one-line EdgeclError."""
    if (not name or name in (".", "..", STORE_FOLDER) or "/" in name or "\\" in name
            or "\0" in name or os.path.isabs(name)):
        raise EdgeclError(f"--exp-name: expected a plain folder name inside the workspace (no "
                          f"path separator, not '.', '..' or '{STORE_FOLDER}', the feature "
                          f"store's), got {name!r}")
    return name


class RunLock:
    """An exclusive, non-blocking flock on run_dir/.lock; `release()` (or the process's end)
    frees it."""

    def __init__(self, run_dir: Path) -> None:
        import fcntl

        self.path = Path(run_dir) / LOCK_NAME
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise EdgeclError(f"{self.path}: cannot create the run folder's lock file "
                              f"({error.strerror})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise EdgeclError(f"{run_dir}: another edgecl train or export is writing this run folder "
                              f"(it holds {self.path}); wait for it to end or choose another "
                              f"--exp-name") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


@dataclass
class OwnedFolder:
    """A locked run folder. `state`: "new" (nothing of this run yet), "started" (an unfinished
    run with these options: resume it) or "complete". `results` holds its results.json when it
    has one (complete, or written after an interrupted run's last completed phase)."""

    path: Path
    lock: RunLock
    state: str
    results: dict[str, Any] | None = None

    def release(self) -> None:
        self.lock.release()


def _differences(recorded: dict[str, Any], wanted: dict[str, Any], limit: int = 4) -> str:
    from edgecl.config import identity_defaults_left_out

    left_out = identity_defaults_left_out()  # an absent key: its default
    keys = sorted(set(recorded) | set(wanted))
    diffs = [f"{k} {recorded.get(k, left_out.get(k))!r} (now {wanted.get(k, left_out.get(k))!r})"
             for k in keys if recorded.get(k) != wanted.get(k)]
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ", ".join(diffs[:limit]) + more


def _empty_into_trash(run_dir: Path) -> None:
    """Move every entry but the lock into a fresh trash folder, then delete it."""
    trash = run_dir / f"{TRASH_PREFIX}{os.getpid()}"
    trash.mkdir()
    for entry in run_dir.iterdir():
        if entry.name != LOCK_NAME and entry != trash:
            os.replace(entry, trash / entry.name)
    shutil.rmtree(trash)


def open_run_folder(run_dir: str | Path, identity: dict[str, Any], *,
                    overwrite: bool = False, data=None) -> OwnedFolder:
    """Create (if needed) and lock `run_dir` for a run with options `identity` on the data of
    fingerprint `data` (edgecl.data.fingerprint; None: a dataset without a data root).

    Raises EdgeclError when another process holds the lock, or when the folder holds a run with
    other options, on other data (edgecl.run_data) or files that are not a run's (unless
    `overwrite`, which empties it)."""
    from edgecl.run_data import data_record, settle_run_data

    run_dir = Path(run_dir)
    check_exp_name(run_dir.name)
    _make_run_folder(run_dir)
    lock = RunLock(run_dir)
    try:
        _clear_leftovers(run_dir, overwrite)
        wanted = json.loads(json.dumps(identity, sort_keys=True, default=str))
        record_path = run_dir / RUN_RECORD_NAME
        others = [p.name for p in run_dir.iterdir() if p.name not in (LOCK_NAME, RUN_RECORD_NAME)]
        if not record_path.exists():
            if others:
                raise EdgeclError(f"{run_dir}: holds files that are not from a run of this "
                                  f"edgecl version ({', '.join(sorted(others)[:3])}); choose "
                                  f"another --exp-name or pass --overwrite to replace them")
            atomic_write_json(record_path, {"config": wanted} if data is None else
                              {"config": wanted, "data": data_record(wanted["data_root"], data)})
            return OwnedFolder(run_dir, lock, "new")
        document = _read_run_record(record_path)
        recorded = document["config"]
        settled = settle_run_data(run_dir, document, wanted, data, started=bool(others))
        if settled is not None:
            atomic_write_json(record_path, settled)
            recorded = settled["config"]
        if recorded != wanted:
            raise EdgeclError(f"{run_dir}: holds a run with other options: "
                              f"{_differences(recorded, wanted)}; choose another --exp-name or "
                              f"pass --overwrite to replace it")
        results = _read_results(run_dir)
        if results is not None and results.get("complete") is True:
            return OwnedFolder(run_dir, lock, "complete", results)
        if others:
            return OwnedFolder(run_dir, lock, "started", results)
        return OwnedFolder(run_dir, lock, "new")
    except BaseException:
        lock.release()
        raise


def _make_run_folder(run_dir: Path) -> None:
    """Create `run_dir` and its parents; a one-line error when a file is in the way."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (run_dir, *run_dir.parents) if p.exists() and not p.is_dir()),
                       run_dir)
        if blocker != run_dir:
            raise EdgeclError(f"{blocker}: Not a directory; a file is in the way of the run folder "
                              f"{run_dir} (check --workspace)") from None
        raise EdgeclError(f"{run_dir}: a file is in the way (expected a folder); choose another "
                          f"--exp-name or --workspace") from None
    except OSError as error:
        raise EdgeclError(f"{run_dir}: cannot create the run folder ({error.strerror})") from None


def _clear_leftovers(run_dir: Path, overwrite: bool) -> None:
    """Remove earlier trash folders, what a killed run left (edgecl.leftovers; before run.json
    exists, only its own temporary) and, with `overwrite`, everything else."""
    for leftover in run_dir.glob(f"{TRASH_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if overwrite:
        _empty_into_trash(run_dir)
    if (run_dir / RUN_RECORD_NAME).exists():
        remove_leftovers(run_dir)
    else:
        remove_stale_temporaries(run_dir, targets={RUN_RECORD_NAME})


def _read_run_record(record_path: Path) -> dict[str, Any]:
    """run.json, checked; a one-line error suggesting --overwrite when it is unreadable."""
    try:
        return read_checked(record_path, lambda doc: problem(doc, RUN_RECORD))
    except (OSError, EdgeclError) as error:
        detail = str(error).removeprefix(f"{record_path}: ")
        raise EdgeclError(f"{record_path}: unreadable run record ({detail}); pass "
                          f"--overwrite to start the run again") from None


def _read_results(run_dir: Path) -> dict[str, Any] | None:
    """The run's results.json with the fields `edgecl train` shows of a run, or None: a damaged
    one is rebuilt from the last committed phase's state.pt, like one an interrupted run never
    wrote."""
    try:
        return read_results(run_dir / RESULTS_NAME, TABLE_FIELDS)
    except (OSError, EdgeclError):
        return None
