"""A run bound to its data: the `data` record of RUN/run.json.

When a run on a dataset with a data root starts, run.json records the root (absolute) and the
fingerprint of its clips (edgecl.data.fingerprint) beside the run's options. A resume or a rerun
of the run (`edgecl train`), `edgecl export RUN` and `edgecl diagnose RUN` compare the data as
they are now with the record, and data that changed are a one-line error naming what changed.

A dataset moved whole is found at its new place by giving the new root: `edgecl train --data-root
NEW` with the run's other options and name (`--config RUN/config.toml --data-root NEW`), or
`edgecl export RUN --data-root NEW`. It is accepted when its fingerprint matches the record, and
recorded: run.json then holds the new root and a `moves` list of {from, to}.

The synthetic dataset (generated into the workspace, no data root) has no record. A run recorded
before fingerprints existed gets one the next time it is trained; its export cannot check its
data, and one whose recorded root is relative needs --data-root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgecl.data.fingerprint import DataFingerprint, absolute_data_root
from edgecl.errors import EdgeclError
from edgecl.fileio import atomic_write_json
from edgecl.run_folder import RUN_RECORD_NAME
from edgecl.schema import RUN_RECORD, problem, read_checked


def run_fingerprint(config, split) -> DataFingerprint | None:
    """The fingerprint of a run's data (None for a dataset without a data root)."""
    return None if not config.data_root else DataFingerprint.of_split(config.data_root, split)


def data_record(root: str, fingerprint: DataFingerprint,
                moves: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """run.json's `data` entry."""
    return {"root": root, **fingerprint.to_dict(), "moves": list(moves or [])}


def recorded_fingerprint(document: dict[str, Any], source: str | Path) -> DataFingerprint | None:
    """The fingerprint run.json records (None for a run without one)."""
    data = document.get("data")
    return None if data is None else DataFingerprint.from_dict(data, str(source))


def _recorded_root(document: dict[str, Any]) -> str | None:
    data = document.get("data")
    if isinstance(data, dict) and isinstance(data.get("root"), str):
        return data["root"]
    root = (document.get("config") or {}).get("data_root")
    return root if isinstance(root, str) else None


def _moved(document: dict[str, Any], identity: dict[str, Any], root: str,
           now: DataFingerprint) -> dict[str, Any]:
    """run.json after the run's data moved to `root` (same fingerprint)."""
    data = document.get("data") or {}
    moves = [*(data.get("moves") or []), {"from": _recorded_root(document), "to": root}]
    return {**document, "config": identity, "data": data_record(root, now, moves)}


def settle_run_data(run_dir: Path, document: dict[str, Any], identity: dict[str, Any],
                    now: DataFingerprint | None, started: bool) -> dict[str, Any] | None:
    """Check the data of a run folder that holds run.json `document` against the run about to
    start (`identity`, the fingerprint `now` of its data; `started`: the folder holds more than
    run.json). Returns run.json's new content when it must change (a fingerprint recorded for the
    first time, the data moved), None when it stays; raises EdgeclError when the data differ, or
    when options other than the data root differ (None, for the caller's own message)."""
    source = run_dir / RUN_RECORD_NAME
    then = recorded_fingerprint(document, source)
    recorded = document.get("config")
    if recorded != identity:
        differs = {k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k)}
        if differs != {"data_root"} or now is None or then is None:
            return None
        change = now.changes_since(then)
        if change is not None:
            raise EdgeclError(f"{run_dir}: holds a run on the data at {_recorded_root(document)}; "
                              f"those at {identity['data_root']} differ from them: {change}; "
                              f"choose another --exp-name or pass --overwrite to replace the run")
        return _moved(document, identity, identity["data_root"], now)
    if now is None:
        return None
    if then is None or not started:
        return {**document, "data": data_record(identity["data_root"], now)}
    change = now.changes_since(then)
    if change is not None:
        raise EdgeclError(f"{run_dir}: its data changed since the run started "
                          f"({identity['data_root']}): {change}; restore them, or pass "
                          f"--overwrite to start the run again on the data as they are")
    return None


# --- reading a run back (export, diagnose) ------------------------------------------------

def read_run_record(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/run.json's content (None when the folder has none: a run from before it existed)."""
    path = Path(run_dir) / RUN_RECORD_NAME
    try:
        return read_checked(path, lambda document: problem(document, RUN_RECORD))
    except FileNotFoundError:
        return None


def run_data_root(run_dir: str | Path, results_root: str | None,
                  given: str | None = None) -> str | None:
    """The data root to rebuild run `run_dir` from: `given` (--data-root, made absolute), else
    the one run.json records, else results.json's `results_root`. A relative recorded root
    (a run from before roots were made absolute) cannot be placed: a one-line error asks for
    --data-root."""
    if given is not None:
        return absolute_data_root(given)
    document = read_run_record(run_dir)
    root = (_recorded_root(document) if document is not None else None) or results_root
    if root and not os.path.isabs(root):
        raise EdgeclError(f"{run_dir}: the run recorded its data root as {root!r}, relative to a "
                          f"folder it did not record; give the dataset's place with --data-root")
    return root


def check_run_data(run_dir: str | Path, root: str | None, split,
                   given: str | None = None) -> None:
    """Refuse rebuilding run `run_dir` from data other than its own; `split` is loaded from
    `root`. With `given` (--data-root) a dataset whose fingerprint matches is recorded as the
    run's new place."""
    run_dir = Path(run_dir)
    document = read_run_record(run_dir)
    if not root or document is None:
        return
    then = recorded_fingerprint(document, run_dir / RUN_RECORD_NAME)
    if then is None:
        return
    now = DataFingerprint.of_split(root, split)
    change = now.changes_since(then)
    if change is not None:
        hint = ("" if given is not None else "; if the run's data moved, give their new place "
                "with --data-root")
        raise EdgeclError(f"{run_dir}: the data at {root} are not the ones the run trained on: "
                          f"{change}{hint}")
    if root != _recorded_root(document):
        identity = {**document["config"], "data_root": root}
        atomic_write_json(run_dir / RUN_RECORD_NAME, _moved(document, identity, root, now))
