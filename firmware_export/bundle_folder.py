"""A bundle folder written atomically: files staged in a hidden sibling folder, the manifest (sizes
and sha256 of every file) written last, then swapped in by rename, so readers see either the old
bundle or the new one. Files of the old folder that are not part of the bundle (the trainer's
checkpoint.pt) are carried over by hard link. A swap killed between its two renames is undone the
next time the folder is written or its run is opened (`recover_interrupted_swap`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgecl.fileio import atomic_write_bytes, atomic_write_json, staging_folder
from firmware_export.device.layout import BUNDLE_FILES, MANIFEST, WITHHELD_DIR
from firmware_export.device.manifest import file_entries


def write_bundle(out_dir: Path, files: dict[str, bytes], manifest: dict[str, Any],
                 withheld: dict[str, bytes] | None = None) -> dict[str, Any]:
    """Write `files` plus manifest.json (with their sizes and sha256) into `out_dir` atomically,
    and `withheld` ({"int8/withheld.json": ...}, paths under WITHHELD_DIR, not in the manifest)
    with them; a previous WITHHELD_DIR is replaced, never carried over.

    Returns the manifest as written (with its "files" table).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_swap(out_dir)
    staging = staging_folder(out_dir)
    try:
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
        manifest = dict(manifest, files=file_entries(staging, files))
        atomic_write_json(staging / MANIFEST, manifest)
        for name, data in (withheld or {}).items():
            atomic_write_bytes(staging / WITHHELD_DIR / name, data)
        if out_dir.exists():
            _carry_over(out_dir, staging, keep=set(files) | {MANIFEST, WITHHELD_DIR})
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _carry_over(old: Path, staging: Path, keep: set[str]) -> None:
    """Hard-link (or copy) the old folder's other entries (checkpoint.pt) into the staging one."""
    for entry in old.iterdir():
        if entry.name in keep or entry.name in BUNDLE_FILES:
            continue
        target = staging / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, target)


def _link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def recover_interrupted_swap(out_dir: Path) -> str | None:
    """Finish what a killed bundle write left beside `out_dir`; returns what was done, if any.

    A write stages the new bundle in `.<name>.*.tmp`, moves the old folder to `.<name>.*.old`,
    renames the staging folder in, then deletes the old one. Killed between the two renames, the
    phase folder is missing and the old one (with the trainer's checkpoint) sits aside: it is put
    back, the interrupted new bundle is dropped, and the write can simply be repeated. Leftover
    staging or retired folders next to a present phase folder are deleted.
    """
    out_dir = Path(out_dir)
    if not out_dir.parent.is_dir():
        return None
    retired = sorted(out_dir.parent.glob(f".{out_dir.name}.*.old"), key=lambda p: p.stat().st_mtime)
    staged = list(out_dir.parent.glob(f".{out_dir.name}.*.tmp"))
    action = None
    if not out_dir.exists() and retired:
        os.replace(retired.pop(), out_dir)
        action = f"restored {out_dir} from an interrupted bundle swap"
    for leftover in retired + staged:
        shutil.rmtree(leftover, ignore_errors=True)
        action = action or f"removed {len(retired) + len(staged)} leftover staging folder(s)"
    return action


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Rename staging to out_dir, moving an existing out_dir aside first and deleting it after."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.rmdir(retired)
    os.replace(out_dir, retired)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(retired, out_dir)
        raise
    shutil.rmtree(retired, ignore_errors=True)
