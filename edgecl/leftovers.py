"""What a killed run leaves in its folder, and the run's scratch space.

A kill (SIGKILL, power loss) gives no writer the chance to clean up, so two kinds of leftovers
are removed when the run folder is next opened, under its lock (`remove_leftovers`; the trainer
and `edgecl export` both call it):
- the atomic writers' temporary files (`.results.json.<random>.tmp`, `.checkpoint.pt.<random>.pt`,
  see edgecl.fileio) in the run folder and its phase folders;
- RUN/.scratch/, where the export's temporary folders go (`scratch_temp_dir`): the int8 search's
  calibration cache, each candidate's quantization folder and onnxruntime's own `pre.quant.*` /
  `ort.quant.*` folders, which would otherwise stay in the system's temporary folder forever.
The staging and retired folders of a bundle swap (`.phase_<i>.*.tmp` / `.old`) are not touched
here: firmware_export.bundle_folder.recover_interrupted_swap puts those back or removes them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from edgecl.errors import EdgeclError
from edgecl.fileio import remove_stale_temporaries
from edgecl.run_folder import PHASE_PREFIX

SCRATCH_NAME = ".scratch"

_redirect_lock = threading.Lock()
_active: list[str] = []  # scratch folders in use, innermost last
_system_default: list[str | None] = []


def scratch_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / SCRATCH_NAME


def remove_leftovers(run_dir: str | os.PathLike) -> list[Path]:
    """Delete RUN/.scratch and the writers' temporary files in RUN and RUN/phase_<i>/; returns
    what went. Only while holding the run's lock (edgecl.run_owner.RunLock)."""
    run_dir = Path(run_dir)
    removed = []
    scratch = scratch_dir(run_dir)
    if scratch.is_dir() and not scratch.is_symlink():
        shutil.rmtree(scratch, ignore_errors=True)
        removed.append(scratch)
    removed += remove_stale_temporaries(run_dir)
    for folder in sorted(run_dir.glob(f"{PHASE_PREFIX}*")):
        if folder.is_dir() and not folder.is_symlink():
            removed += remove_stale_temporaries(folder)
    return removed


@contextlib.contextmanager
def scratch_temp_dir(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Within the block, every temporary file or folder made through `tempfile` without an
    explicit `dir` (onnxruntime's included) is made in RUN/.scratch/ instead of the system's
    temporary folder, so a kill leaves nothing outside the run folder. The folder is removed at
    the end when empty; whatever a kill leaves in it goes at the run's next start.

    `tempfile.tempdir` is process-wide: nested or concurrent blocks share the innermost folder,
    and the system default comes back when the last one ends."""
    folder = scratch_dir(run_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EdgeclError(f"{folder}: cannot create the run's scratch folder "
                          f"({error.strerror or error})") from None
    with _redirect_lock:
        if not _active:
            _system_default[:] = [tempfile.tempdir]
        _active.append(str(folder))
        tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        with _redirect_lock:
            _active.remove(str(folder))
            tempfile.tempdir = _active[-1] if _active else _system_default[0]
        with contextlib.suppress(OSError):
            folder.rmdir()
