"""Bundle manifests: sha256 and size of every file, and verification before anything is run.

Torch-free (hashlib and json only): the runtime verifies bundles on device hosts with it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgecl.errors import EdgeclError
from edgecl.schema import DictOf, Fields, problem
from firmware_export.device.layout import MANIFEST, MANIFEST_FORMAT, WITHHELD_REPORT

_CHUNK = 1 << 20
FILE_ENTRY = Fields({"bytes": int, "sha256": str}, ("bytes", "sha256"))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(folder: str | os.PathLike[str], names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{name: {"bytes": size, "sha256": hex}} for files in `folder`, sorted by name."""
    folder = Path(folder)
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
            for name in sorted(names)}


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse `folder`/manifest.json; EdgeclError if it is missing, not JSON or lacks a file list."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgeclError(f"{path}: bundle manifest not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EdgeclError(f"{path}: unreadable bundle manifest ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise EdgeclError(f"{path}: expected a JSON object with a 'files' table")
    entries = problem(manifest["files"], DictOf(FILE_ENTRY), "'files'")
    if entries is not None:
        raise EdgeclError(f"{path}: {entries}; the bundle is corrupt or modified, re-export it")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise EdgeclError(f"{path}: expected manifest format {MANIFEST_FORMAT}, got "
                          f"{manifest.get('format')!r}")
    return manifest


def verify_bundle(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file the manifest lists (present, size, sha256); return the manifest.

    Raises EdgeclError naming the first file that is missing or whose bytes do not match.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, expected in manifest["files"].items():
        path = folder / name
        if Path(name).name != name:
            raise EdgeclError(f"{folder / MANIFEST}: file entry {name!r} must be a plain file name")
        if not path.is_file():
            raise EdgeclError(f"{path}: listed in the bundle manifest but missing")
        size = path.stat().st_size
        if size != expected.get("bytes"):
            raise EdgeclError(f"{path}: size {size} bytes does not match the manifest "
                              f"({expected.get('bytes')} bytes); the bundle is corrupt or modified")
        digest = sha256_file(path)
        if digest != expected.get("sha256"):
            raise EdgeclError(f"{path}: sha256 {digest[:16]}... does not match the manifest "
                              f"({str(expected.get('sha256'))[:16]}...); the bundle is corrupt or "
                              f"modified")
    return manifest


def refuse_withheld(path: Path) -> None:
    """EdgeclError when `path` is a withheld build kept for diagnosis (its folder, or a file in
    it): never run, even with --bare."""
    folder = path if path.is_dir() else path.parent
    if (folder / WITHHELD_REPORT).is_file():
        raise EdgeclError(f"{path}: a withheld build kept for diagnosis (it missed its shipping "
                          f"rule; see {folder / WITHHELD_REPORT}), not a bundle; give the phase's "
                          f"bundle folder")
