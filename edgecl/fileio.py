"""Atomic file writes: a reader never sees a half-written result, model or manifest.

Each writer writes to a temporary file in the target's folder, flushes and fsyncs it, then renames
it over the target (rename is atomic within one filesystem). Any failure (no space, read-only
folder, a parent that is a file) removes the temporary file and raises EdgeclError naming the
target and the reason, so nothing half-written is ever left behind. Temporary files and folders
are created private (0600 / 0700); what is renamed into place gets the modes the user's umask
gives a new file or folder, so collaborators on a shared server can read a run like any other.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from edgecl.errors import EdgeclError


def umask_mode(folder: bool = False) -> int:
    """The mode a newly created file (0666) or folder (0777) gets under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def staging_folder(target: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A hidden sibling folder `.NAME.*SUFFIX` of `target` to build it in before a rename, with
    the umask's folder mode (mkdtemp alone makes it 0700, which the rename would keep)."""
    target = Path(target)
    _make_parent(target)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix,
                                       dir=target.parent))
    except OSError as error:
        raise _failed(target, error) from None
    folder.chmod(umask_mode(folder=True))
    return folder


def _failed(target: Path, error: BaseException) -> EdgeclError:
    """The one-line error of a failed write of `target`."""
    if isinstance(error, OSError):
        reason = error.strerror or " ".join(str(error).split())
    else:
        reason = "No space left on device"
    return EdgeclError(f"{target}: could not write ({reason})")


def _disk_full(folder: Path) -> bool:
    try:
        return os.statvfs(folder).f_bavail == 0
    except (OSError, AttributeError):
        return False


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EdgeclError(f"{target.parent}: cannot create the folder "
                          f"({error.strerror or error})") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; creates the parent folder. Returns the path."""
    target = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    return _atomic(target, write, ".tmp")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def finite_json(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, so json.dumps writes JSON that
    strict parsers accept (bare NaN and Infinity are not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def json_text(obj: Any, sort_keys: bool = False) -> str:
    """`obj` as indented strict JSON (a non-finite float as null), for files and `--json`."""
    return json.dumps(finite_json(obj), indent=2, sort_keys=sort_keys, allow_nan=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented, key-sorted JSON atomically (stable bytes for the same object);
    a non-finite float is written as null."""
    return atomic_write_text(path, json_text(obj, sort_keys=True) + "\n")


def atomic_write_with(path: str | os.PathLike, write) -> Path:
    """Atomically produce `path` with a writer callback `write(tmp_path)` that creates the file.

    For libraries that insist on writing to a path themselves (onnx.save, soundfile.write; torch
    has atomic_torch_save): they write to a temporary path in the same folder, which is then renamed.
    """
    target = Path(path)
    return _atomic(target, write, target.suffix or ".tmp")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """torch.save `obj` to `path` atomically. torch reports a failed write (no space, a file-size
    limit) as a RuntimeError about stream positions; written through a Python file, the OSError
    behind it is still at hand, so the failure is the one-line error of any other write."""
    def write(tmp: Path) -> None:
        import torch

        with open(tmp, "wb") as handle:
            try:
                torch.save(obj, handle)
            except RuntimeError as error:
                cause = _os_error_behind(error)
                if cause is None:
                    raise
                raise cause from None
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write_with(path, write)


def _os_error_behind(error: BaseException) -> OSError | None:
    """The OSError among the exceptions `error` was raised while handling, if any."""
    seen = error.__context__ or error.__cause__
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__context__ or seen.__cause__
    return seen


def _atomic(target: Path, write, suffix: str) -> Path:
    """Run `write(tmp)` on a temporary file next to `target`, then rename it over `target`."""
    _make_parent(target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix,
                                        dir=target.parent)
        os.close(fd)
    except OSError as error:
        raise _failed(target, error) from None
    try:
        write(Path(tmp_name))
        os.chmod(tmp_name, umask_mode())
        os.replace(tmp_name, target)
    except OSError as error:
        Path(tmp_name).unlink(missing_ok=True)
        raise _failed(target, error) from None
    except Exception as error:
        Path(tmp_name).unlink(missing_ok=True)
        if _disk_full(target.parent):  # a library that reports a short write its own way
            raise _failed(target, error) from None
        raise
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


# `_atomic`'s temporary files: `.NAME.<8 of tempfile's name characters><suffix>`, the suffix
# being `.tmp` or NAME's own suffix (atomic_write_with).
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]+)")


def writer_temporary_target(name: str) -> str | None:
    """The target file name whose atomic write `name` is a temporary file of, else None."""
    match = _TEMPORARY.fullmatch(name)
    if match is None:
        return None
    target, suffix = match["target"], match["suffix"]
    return target if suffix in (".tmp", Path(target).suffix) else None


def remove_stale_temporaries(folder: str | os.PathLike,
                             targets: set[str] | None = None) -> list[Path]:
    """Delete the atomic writers' temporary files in `folder` (only regular files named as
    `_atomic` names them; of `targets` only, when given) and return them. A writer deletes its
    own on any error, so these are left by a killed process: call this only while holding the
    folder's lock, so no live writer's file can be among them."""
    removed = []
    for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
        target = writer_temporary_target(entry.name)
        if (target is None or (targets is not None and target not in targets)
                or entry.is_symlink() or not entry.is_file()):
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
